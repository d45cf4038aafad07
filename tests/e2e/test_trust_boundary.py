"""The public listener is the trust boundary: no spelling of an internal,
admin, metrics, OpenAPI or console path reaches the sidecar through it (the
sidecar counts what it receives), and no secret of the stack appears where it
is not meant to be: replies, Envoy's log and access log, the sidecar's log,
the database."""

from __future__ import annotations

import http.client
import json
import re
import secrets as rand
from http.server import BaseHTTPRequestHandler

import pytest

from helpers import call, chat_body, deposit, secret_leaks, stack_with_webhook

WEBHOOK_SECRET = "whsec_e2e_" + rand.token_hex(16)
BYOK_KEY = "sk-byok-" + rand.token_hex(16)


class Receiver(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.received.append(str(self.headers).encode() + body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def guarded():
    with stack_with_webhook(Receiver, WEBHOOK_SECRET) as s:
        yield s


# --- Trust boundary ---------------------------------------------------------

TARGETS = ["/internal/v1/authorize", "/internal/v1/settle", "/admin/v1/paywalls", "/admin/v1/providers",
           "/metrics", "/openapi.json", "/healthz", "/console/", "/console/paywalls",
           # Only /webhooks/stripe itself is public; nothing beside or below it.
           "/webhooks/stripe/replay", "/webhooks/other"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


def spellings(target: str) -> list[str]:
    """`target` as a client could spell it to slip past a prefix match."""
    rest = target[1:]
    first, _, tail = rest.partition("/")
    return [
        target,
        "/v1/.." + target, "/v1/%2e%2e" + target, "/v1/%2E%2E" + target, "/v1/./.." + target,
        "/" + target, "//" + rest, "/v1//.." + target,
        f"/%{ord(rest[0]):02x}{rest[1:]}", f"/%{ord(rest[0]):02X}{rest[1:]}",
        "/v1/user/..%2f..%2f" + rest, "/v1/user/..%2F..%2F" + rest, "/v1/user/..%5c..%5c" + rest,
        "/v1/user/../../" + rest, "/v1/user/%2e%2e/%2e%2e/" + rest, "/pay/../" + rest,
        "/webhooks/stripe/../../" + rest, "/webhooks/stripe/%2e%2e/%2e%2e/" + rest,
        "/v1/models/../../" + rest,
        target.upper(), "/" + first.capitalize() + ("/" + tail if tail else ""),
        target + "?x=1", target + "#frag",
    ]


def sidecar_counts(stack) -> dict[str, float]:
    text = call(stack.ports.ledger, "GET", "/metrics").body.decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^tollgate_ledger_http_requests_total\{area="(\w+)"\} (\S+)$', text, re.M)}


def probe(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "2")
        conn.endheaders(b"{}")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_no_spelling_of_a_private_path_reaches_the_sidecar(guarded):
    before = sidecar_counts(guarded)
    assert set(before) >= {"internal", "admin", "public", "pages", "payments", "meta", "other"}, before
    answered = {}
    for target in TARGETS:
        for path in spellings(target):
            for method in METHODS:
                status = probe(guarded.ports.public, method, path)
                answered[(method, path)] = status
                assert status in (400, 404, 405), (method, path, status)
    after = sidecar_counts(guarded)
    # Only this test's own two scrapes of /metrics reached it (on its own port).
    expected = {**before, "meta": before["meta"] + 1}
    assert after == expected, f"the sidecar received probes: {before} -> {after}"
    assert len(answered) > 1000


# --- Secrets ----------------------------------------------------------------

def reply_bytes(r) -> bytes:
    return json.dumps(r.headers).encode() + r.body


def link_token(text: str, page: str) -> str:
    return re.search(rf"/pay/{page}/([0-9a-f]{{64}})", text).group(1)


def test_no_secret_appears_where_it_is_not_meant_to(guarded):
    s = guarded
    auth = {"Authorization": f"Bearer {s.secrets.demo_key}", "Content-Type": "application/json"}
    shared = {"Authorization": f"Bearer {s.secrets.shared_key}", "Content-Type": "application/json"}
    admin = {"Authorization": f"Bearer {s.secrets.admin_token}", "Content-Type": "application/json"}
    replies: list[bytes] = []   # replies no secret may appear in
    meant: list[tuple[str, bytes]] = []  # (the one secret it carries on purpose, reply)

    # A new user: the top-up link (meant in the reply and on its page).
    r = call(s.ports.public, "POST", "/v1/chat/completions", auth, chat_body("sec-user"))
    topup = link_token(r.json()["choices"][0]["message"]["content"], "topup")
    meant.append((topup, reply_bytes(r)))
    page = call(s.ports.public, "GET", f"/pay/topup/{topup}")
    assert page.status == 200
    meant.append((topup, reply_bytes(page)))
    paid = call(s.ports.public, "POST", f"/pay/topup/{topup}",
                {"Content-Type": "application/x-www-form-urlencoded"}, "amount=2.00")
    assert paid.status == 200
    meant.append((topup, reply_bytes(paid)))

    # A shared paywall: the consent link.
    r = call(s.ports.public, "POST", "/v1/chat/completions", shared, chat_body("sec-shared"))
    consent = link_token(r.json()["choices"][0]["message"]["content"], "connect")
    meant.append((consent, reply_bytes(r)))
    for method, body in (("GET", None), ("POST", "")):
        page = call(s.ports.public, method, f"/pay/connect/{consent}",
                    {"Content-Type": "application/x-www-form-urlencoded"}, body)
        assert page.status == 200
        meant.append((consent, reply_bytes(page)))

    # Money, completions (plain and streamed), reads.
    assert deposit(s, auth, "sec-user", "1.00", key="sec-1").status == 200
    for stream in (False, True):
        r = call(s.ports.public, "POST", "/v1/chat/completions", auth, chat_body("sec-user", stream=stream))
        assert r.status == 200
        replies.append(reply_bytes(r))
    for path in ("/v1/user/balance?user=sec-user", "/v1/user/ledger?user=sec-user", "/v1/models"):
        replies.append(reply_bytes(call(s.ports.public, "GET", path, auth)))
    # Wrong keys and secrets sent where they do not belong are not echoed.
    for wrong in (s.secrets.admin_token, s.secrets.internal_secret, s.secrets.master_key):
        r = call(s.ports.public, "POST", "/v1/chat/completions",
                 {"Authorization": f"Bearer {wrong}", "Content-Type": "application/json"}, chat_body("sec-user"))
        assert r.status == 401
        replies.append(reply_bytes(r))
    r = call(s.ports.public, "GET", "/v1/user/balance?user=sec-user", {"Authorization": f"Bearer {s.secrets.admin_token}"})
    replies.append(reply_bytes(r))

    # The admin API: a new paywall (its key is meant in that one reply) with its own provider key (BYOK).
    created = call(s.ports.ledger, "POST", "/admin/v1/paywalls", admin, json.dumps({"id": "sec-byok", "name": "BYOK"}))
    assert created.status == 201, created.body
    new_key = created.json()["key"]["key"]
    meant.append((new_key, reply_bytes(created)))
    r = call(s.ports.ledger, "PUT", "/admin/v1/paywalls/sec-byok/provider-keys/mock", admin, json.dumps({"key": BYOK_KEY}))
    assert r.status == 200, r.body
    replies.append(reply_bytes(r))
    for path in ("/admin/v1/paywalls", "/admin/v1/paywalls/sec-byok/provider-keys", "/admin/v1/providers",
                 "/admin/v1/webhooks", "/admin/v1/webhooks/operator/deliveries", "/openapi.json", "/metrics"):
        r = call(s.ports.ledger, "GET", path, admin)
        assert r.status == 200, (path, r.status)
        replies.append(reply_bytes(r))
    # The BYOK key reaches the provider (which refuses it and quotes it): our reply does not carry it.
    byok_auth = {"Authorization": f"Bearer {new_key}", "Content-Type": "application/json"}
    assert deposit(s, byok_auth, "sec-byok-user", "1.00").status == 200
    r = call(s.ports.public, "POST", "/v1/chat/completions", byok_auth, chat_body("sec-byok-user"))
    assert r.status == 502 and r.error()["code"] == "provider_auth_failed", r.body
    replies.append(reply_bytes(r))
    replies.extend(Receiver.received)  # webhook deliveries: signed, never carrying the secret

    found = leaks(s, {
        "isolated paywall key": s.secrets.demo_key, "shared paywall key": s.secrets.shared_key,
        "new paywall key": new_key, "admin token": s.secrets.admin_token,
        "internal secret": s.secrets.internal_secret, "provider key": s.secrets.provider_key,
        "master key": s.secrets.master_key, "BYOK key": BYOK_KEY, "webhook secret": WEBHOOK_SECRET,
        "top-up link token": topup, "consent link token": consent,
    }, replies, meant)
    assert not found, found


def leaks(stack, named: dict[str, str], replies: list[bytes], meant: list[tuple[str, bytes]]) -> list:
    by_value = {secret: what for what, secret in named.items()}
    found = [(by_value[secret], where) for secret, where in secret_leaks(stack, list(named.values()), replies)]
    # A reply that carries one secret on purpose carries no other.
    found += [(what, "reply meant for another secret") for what, secret in named.items()
              for carried, blob in meant if secret != carried and secret.encode() in blob]
    # The access log says a page was opened, not its token.
    log = (stack.state_dir / "envoy.log").read_text(errors="replace")
    assert "/pay/<token redacted>" in log, [l for l in log.splitlines() if "path" in l][:8]
    return found
