"""Bad input through real Envoy: a clear OpenAI-shaped error, nothing
forwarded to the provider, and the ledger unchanged."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import call, chat_body, deposit, mock_requests
from stack import Ports, Stack


def assert_rejected(stack, ledger, send, status, code=None, param=None):
    before_mock, before_ledger = mock_requests(stack), ledger.snapshot()
    r = send()
    assert r.status == status, r.body
    err = r.error()
    if code:
        assert err["code"] == code, err
    if param:
        assert err["param"] == param, err
    assert r.headers.get("x-request-id")
    time.sleep(0.2)  # a stray settlement would land within a few ticks
    assert mock_requests(stack) == before_mock, "request reached the provider"
    assert ledger.snapshot() == before_ledger, "ledger changed"
    return err


def post(stack, headers, body, path="/v1/chat/completions", **kw):
    return lambda: call(stack.ports.public, "POST", path, headers, body, **kw)


def test_missing_and_unknown_keys_are_401(stack, ledger, user):
    ct = {"Content-Type": "application/json"}
    assert_rejected(stack, ledger, post(stack, ct, chat_body(user)), 401, "invalid_api_key")
    bad = {**ct, "Authorization": "Bearer tg_wrong_key_000000000000"}
    assert_rejected(stack, ledger, post(stack, bad, chat_body(user)), 401, "invalid_api_key")


def test_missing_or_conflicting_users_are_400(stack, auth, ledger, user):
    assert_rejected(stack, ledger, post(stack, auth, chat_body(None)), 400, "missing_user", "user")
    h = {**auth, "X-Paywall-User": "someone-else"}
    assert_rejected(stack, ledger, post(stack, h, chat_body(user)), 400, "conflicting_user", "user")
    assert_rejected(stack, ledger, post(stack, auth, chat_body(user), path="/v1/other/chat/completions"),
                    400, "conflicting_user")


@pytest.mark.parametrize("body,code,param", [
    ("{not json", "invalid_json", None),
    ('"a string"', "invalid_json", None),
    (json.dumps({"user": "u", "messages": [{"role": "user", "content": "x"}]}), "missing_required_parameter", "model"),
    (json.dumps({"user": "u", "model": "mock-gpt"}), "missing_required_parameter", "messages"),
    (json.dumps({"user": "u", "model": "mock-gpt", "messages": []}), "empty_array", "messages"),
    ("[" * 5000 + "]" * 5000, "invalid_json", None),
])
def test_invalid_bodies_are_400(stack, auth, ledger, body, code, param):
    assert_rejected(stack, ledger, post(stack, auth, body), 400, code, param)


def test_unknown_model_is_404(stack, auth, ledger, user):
    body = json.dumps({"model": "gpt-nope", "user": user, "messages": [{"role": "user", "content": "x"}]})
    assert_rejected(stack, ledger, post(stack, auth, body), 404, "model_not_found", "model")


def test_bodies_over_the_limit_are_413(stack, auth, ledger, user):
    big = chat_body(user, "x" * (stack.max_body_bytes + 10))
    assert_rejected(stack, ledger, post(stack, auth, big), 413, "request_too_large")
    assert_rejected(stack, ledger, post(stack, auth, big, chunked=True), 413, "request_too_large")


def test_wrong_method_is_405(stack, auth, ledger):
    err = assert_rejected(stack, ledger, lambda: call(stack.ports.public, "GET", "/v1/chat/completions", auth),
                          405, "method_not_allowed")
    assert "POST" in err["message"]


def test_internal_api_and_spoofed_routes_are_not_reachable(stack, auth, ledger, user):
    h = {**auth, "x-tollgate-internal-secret": stack.secrets.internal_secret, "x-tollgate-route": "mock"}
    r = call(stack.ports.public, "POST", "/internal/v1/authorize", h, "{}")
    assert r.status == 404
    before = mock_requests(stack)
    # Paths the filter does not bill: the spoofed route header is stripped all the same.
    for path in ("/v1/embeddings", "/v1/chat/completions/extra", "/v1/chat"):
        r = call(stack.ports.public, "POST", path, h, chat_body(user))
        assert r.status == 404, (path, r.status)
    # Envoy merges slashes before the filter sees the path: this one is a
    # completion like any other, billed (here: no funds, the top-up message).
    r = call(stack.ports.public, "POST", "/v1//chat/completions", h, chat_body(user))
    assert r.status == 200 and r.headers["x-tollgate-action"] == "topup"
    assert mock_requests(stack) == before


def test_sidecar_down_fails_closed_with_503(stack, auth, ledger, user):
    assert deposit(stack, auth, user, "1.00").status == 200
    stack.stop_one("ledger")
    try:
        before = mock_requests(stack)
        r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))
        assert r.status == 503, r.body
        assert r.error()["code"] == "paywall_unavailable"
        assert mock_requests(stack) == before
    finally:
        stack.start_ledger()
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))
    assert r.status == 200 and "x-tollgate-action" not in r.headers


class Blackhole:
    """Accepts connections and never answers: a sidecar that is too slow."""

    def __init__(self, port: int):
        self.sock = socket.create_server(("127.0.0.1", port))
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_slow_sidecar_fails_closed_within_the_callout_timeout(tmp_path: Path):
    ports = Ports.free()
    s = Stack(state_dir=tmp_path, ports=ports, callout_timeout_ms=500)
    hole = Blackhole(ports.ledger)
    try:
        s.state_dir.mkdir(exist_ok=True)
        s.start_mock()
        s.start_envoy()
        headers = {"Authorization": "Bearer anything-at-all", "Content-Type": "application/json"}
        started = time.monotonic()
        r = call(ports.public, "POST", "/v1/chat/completions", headers, chat_body("slowpoke"))
        elapsed = time.monotonic() - started
        assert r.status == 503 and r.error()["code"] == "paywall_unavailable"
        assert elapsed < 3, f"took {elapsed:.2f}s with a 0.5s callout timeout"
        assert mock_requests(s) == 0
    finally:
        s.stop()
        hole.close()
