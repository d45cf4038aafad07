"""One request followed end to end through the real stack: from the
`x-request-id` a client gets, to the hold, the charge, the ledger entries, the
events and the signed webhook an operator's receiver gets (after a first
failed attempt, retried)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler

import pytest

from helpers import Ledger, call, chat_body, deposit, stack_with_webhook

SECRET = "whsec_e2e_5b0e1f2a3c4d"


class Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first delivery, 200 afterwards; keeps what it got."""
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(500 if len(Receiver.received) == 1 else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trail_stack():
    with stack_with_webhook(Receiver, SECRET, server_settings="webhook_retry_base_ms = 300\n",
                            events='["charge.created"]',
                            env={"TOLLGATE_LOG_JSON": "true"}) as s:  # both sides log JSON lines
        yield s


def verify_signature(header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def paid_request(stack, user: str) -> str:
    """A user with money asks once; returns the request id the client got."""
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    assert deposit(stack, auth, user, "5.00").status == 200
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))
    assert r.status == 200, r.body
    return r.headers["x-request-id"]


def test_a_request_id_leads_to_everything_it_caused(trail_stack):
    stack = trail_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}"}
    rid = paid_request(stack, "trail-user")

    ledger = Ledger(stack.state_dir / "ledger.db")
    charge = ledger.charge_for(rid)
    hold = ledger.hold_for(rid, state="posted")
    assert charge["hold_id"] == hold["id"]
    transfers = ledger.query("SELECT kind, amount FROM transfers WHERE request_id = ? ORDER BY seq", rid)
    assert [t["kind"] for t in transfers] == ["hold", "post", "provider_cost"]
    assert transfers[1]["amount"] == charge["amount"]
    kinds = {e["kind"] for e in ledger.query("SELECT kind FROM events WHERE request_id = ?", rid)}
    assert {"charge.created", "request.completed"} <= kinds

    # The user's ledger entries (public API) name the request too.
    entries = call(stack.ports.public, "GET", "/v1/user/ledger?user=trail-user", auth).json()["data"]
    assert any(e.get("request_id") == rid for e in entries), entries

    # The operator's receiver: a first attempt refused, then the retry, signed.
    deadline = time.monotonic() + 15
    while len(Receiver.received) < 2:
        assert time.monotonic() < deadline, f"webhook not retried: {len(Receiver.received)} attempt(s)"
        time.sleep(0.1)
    (h1, b1), (h2, b2) = Receiver.received[:2]
    assert b1 == b2 and h1["tollgate-delivery-id"] == h2["tollgate-delivery-id"]
    assert verify_signature(h2["tollgate-signature"], b2)
    event = json.loads(b2)
    assert (event["type"], event["request_id"], event["user"]) == ("charge.created", rid, "trail-user")
    assert event["data"]["charge_id"] == charge["id"]

    admin = {"Authorization": f"Bearer {stack.secrets.admin_token}"}
    deadline = time.monotonic() + 5
    while True:
        log = call(stack.ports.ledger, "GET", "/admin/v1/webhooks/operator/deliveries", admin).json()["data"]
        if log and log[0]["state"] == "delivered":
            break
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    assert (log[0]["request_id"], log[0]["attempts"], log[0]["last_status"]) == (rid, 2, 200)


def test_both_sides_log_json_lines_carrying_the_request_id(trail_stack):
    stack = trail_stack
    rid = paid_request(stack, "json-log-user")
    Ledger(stack.state_dir / "ledger.db").charge_for(rid)
    stack.quiesce_envoy()
    for name in ("envoy", "ledger"):
        lines = [l for l in (stack.state_dir / f"{name}.log").read_text().splitlines() if rid in l]
        assert lines, f"no {name} log line names {rid}"
        records = [json.loads(l) for l in lines]  # every one is a JSON object
        assert all(isinstance(rec, dict) for rec in records)
