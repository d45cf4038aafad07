"""Real money's path end to end, through real Envoy, with Stripe played by
the strict local fake (tests/fakes/stripe_fake.py): the stack is the one
`make run` starts with STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and
STRIPE_API_BASE set. A denied request's link leads to the top-up page, a
Checkout Session, the (fake) hosted payment, the signed webhook through
Envoy's public listener, and a balance credited once; delayed payments,
refunds beyond the balance and a lost webhook (reconcile) too."""

from __future__ import annotations

import json
import os
import re
import secrets as rand
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import stripe

from helpers import call, chat_body, secret_leaks
from stack import ROOT, Ports, Stack, binary, payments_processor

sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import stripe_fake  # noqa: E402

SECRET_KEY = "sk_test_" + rand.token_hex(16)
WEBHOOK_SECRET = "whsec_" + rand.token_hex(16)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def paying():
    """(stack, fake): the demo stack on the Stripe processor, the fake at STRIPE_API_BASE."""
    ports = Ports.free()
    fake = stripe_fake.Fake(SECRET_KEY, WEBHOOK_SECRET, f"http://127.0.0.1:{ports.public}/webhooks/stripe")
    server = stripe_fake.serve(fake)
    saved = dict(os.environ)
    os.environ.update({"STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                       "STRIPE_API_BASE": fake.base_url})
    os.environ["TOLLGATE_PAYMENTS"] = payments_processor(dict(os.environ))  # as `make run` decides
    assert os.environ["TOLLGATE_PAYMENTS"] == "stripe"
    with tempfile.TemporaryDirectory(prefix="tollgate-stripe-") as tmp:
        s = Stack(state_dir=Path(tmp), ports=ports)
        try:
            s.start()
            yield s, fake
        finally:
            s.stop()
            server.shutdown()
            os.environ.clear()
            os.environ.update(saved)


def auth(s) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.secrets.demo_key}", "Content-Type": "application/json"}


def chat(s, user: str):
    return call(s.ports.public, "POST", "/v1/chat/completions", auth(s), chat_body(user))


def balance(s, user: str) -> str:
    """The user's balance; "none" for a user without a wallet (never credited)."""
    r = call(s.ports.public, "GET", f"/v1/user/balance?user={user}", auth(s))
    if r.status == 404 and r.error()["code"] == "user_not_found":
        return "none"
    return r.json()["balance"]


def topup_path(s, user: str) -> str:
    """The denied request's link, as a path on the public listener."""
    r = chat(s, user)
    assert r.status == 200 and r.headers["x-tollgate-action"] == "topup", r.body
    text = r.json()["choices"][0]["message"]["content"]
    return re.search(r"/pay/topup/[0-9a-f]{64}", text).group(0)


def start_checkout(s, fake, user: str, amount: str = "10.00") -> tuple[str, str, str]:
    """Opens the page, chooses `amount`: (link path, session id, hosted page URL)."""
    path = topup_path(s, user)
    page = call(s.ports.public, "GET", path)
    assert page.status == 200 and b"5.00 USD" in page.body and b"20.00 USD" in page.body, page.body
    r = call(s.ports.public, "POST", path, FORM, f"amount={amount}")
    assert r.status == 303, r.body
    url = r.headers["location"]
    assert url.startswith(fake.base_url + "/c/pay/cs_test_"), url
    return path, url.rsplit("/", 1)[1], url


def fake_post(fake, path: str, body: dict | None = None):
    port = int(fake.base_url.rsplit(":", 1)[1])
    return call(port, "POST", path, {"Content-Type": "application/json"}, json.dumps(body or {}))


def deposits_of(s, user: str) -> int:
    import sqlite3
    conn = sqlite3.connect(f"file:{s.state_dir / 'ledger.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM transfers WHERE kind = 'deposit' AND credit_account = ?",
                            (f"wallet:demo:{user}",)).fetchone()[0]
    finally:
        conn.close()


def test_a_paid_top_up_is_credited_once_and_the_chat_goes_through(paying):
    s, fake = paying
    user = "stripe-" + rand.token_hex(4)
    path, sid, hosted = start_checkout(s, fake, user)

    # What the sidecar asked Stripe for, as Stripe documents it.
    created = [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v1/checkout/sessions"][-1]
    assert created["headers"]["authorization"] == f"Bearer {SECRET_KEY}"
    assert created["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    assert created["headers"]["idempotency-key"].startswith("tollgate-topup-")
    params = dict(urllib.parse.parse_qsl(created["body"]))
    assert params["mode"] == "payment" and params["line_items[0][quantity]"] == "1"
    assert params["line_items[0][price_data][unit_amount]"] == "1000"
    assert params["line_items[0][price_data][currency]"] == "usd"
    assert "Tollgate demo app" in params["line_items[0][price_data][product_data][name]"]
    assert params["metadata[tollgate_user]"] == user and params["metadata[tollgate_paywall]"] == "demo"
    assert params["success_url"].endswith(path + "/success?session_id={CHECKOUT_SESSION_ID}")
    assert params["cancel_url"].endswith(path + "/cancel")

    # The same choice again (the back button) gets the same session back.
    again = call(s.ports.public, "POST", path, FORM, "amount=10.00")
    assert again.status == 303 and again.headers["location"] == hosted

    # The customer pays: the fake sends the signed event through Envoy, then returns them to us.
    port = int(fake.base_url.rsplit(":", 1)[1])
    paid = call(port, "POST", urllib.parse.urlsplit(hosted).path)
    assert paid.status == 303
    assert fake.deliveries[-1]["status"] == 200, fake.deliveries
    success = urllib.parse.urlsplit(paid.headers["location"])
    page = call(s.ports.public, "GET", f"{success.path}?{success.query}")
    assert page.status == 200 and b"Payment received" in page.body and b"10.000000" in page.body, page.body
    assert balance(s, user) == "10.000000"
    r = chat(s, user)
    assert r.status == 200 and "x-tollgate-action" not in r.headers, r.body

    # Delivered three more times: still credited once. The link cannot pay again.
    event_id = fake.deliveries[-1]["event"]
    for _ in range(3):
        assert fake_post(fake, f"/_fake/events/{event_id}/resend").json()["status"] == 200
    assert deposits_of(s, user) == 1
    assert call(s.ports.public, "GET", path).status == 404
    assert call(s.ports.public, "POST", path, FORM, "amount=10.00").status == 404


def test_unsigned_tampered_or_stale_events_are_refused_and_change_nothing(paying):
    s, fake = paying
    user = "forger-" + rand.token_hex(4)
    _, sid, _ = start_checkout(s, fake, user)
    event = fake_post(fake, f"/_fake/sessions/{sid}/complete", {"deliver": False}).json()
    body = json.dumps(event).encode()
    tampered = body.replace(b'"amount_total": 1000', b'"amount_total": 100000')
    assert tampered != body
    now = int(time.time())
    cases = {
        "unsigned": {},
        "wrong secret": {"Stripe-Signature": stripe_fake.sign("whsec_" + rand.token_hex(16), body)},
        "stale": {"Stripe-Signature": stripe_fake.sign(WEBHOOK_SECRET, body, now - 301)},
        "tampered": {"Stripe-Signature": stripe_fake.sign(WEBHOOK_SECRET, body)},
    }
    for name, headers in cases.items():
        payload = tampered if name == "tampered" else body
        r = call(s.ports.public, "POST", "/webhooks/stripe", {"Content-Type": "application/json", **headers}, payload)
        assert r.status == 400, (name, r.status, r.body)
    assert balance(s, user) == "none"
    # The genuine one, as Stripe's own library checks it, is accepted.
    good = stripe_fake.sign(WEBHOOK_SECRET, body)
    assert stripe.Webhook.construct_event(body, good, WEBHOOK_SECRET).id == event["id"]
    r = call(s.ports.public, "POST", "/webhooks/stripe", {"Content-Type": "application/json", "Stripe-Signature": good}, body)
    assert r.status == 200 and r.json()["outcome"] == "credited", r.body
    assert balance(s, user) == "10.000000"


def test_a_delayed_payment_that_fails_credits_nothing(paying):
    s, fake = paying
    user = "slow-" + rand.token_hex(4)
    path, sid, _ = start_checkout(s, fake, user, "5.00")
    fake_post(fake, f"/_fake/sessions/{sid}/complete", {"delayed": True})
    page = call(s.ports.public, "GET", f"{path}/success?session_id={sid}")
    assert b"Processing your payment" in page.body and b'http-equiv="refresh"' in page.body, page.body
    fake_post(fake, f"/_fake/sessions/{sid}/settle", {"succeeded": False})
    assert fake.deliveries[-1]["status"] == 200
    page = call(s.ports.public, "GET", f"{path}/success?session_id={sid}")
    assert b"Payment failed" in page.body, page.body
    assert balance(s, user) == "none" and deposits_of(s, user) == 0
    # The link still works for another try, and the cancel page offers the choices again.
    cancel = call(s.ports.public, "GET", f"{path}/cancel")
    assert cancel.status == 200 and b"cancelled" in cancel.body and b"10.00 USD" in cancel.body


def test_a_refund_beyond_the_balance_leaves_the_rest_owed_and_blocks_requests(paying):
    s, fake = paying
    user = "refund-" + rand.token_hex(4)
    path, sid, hosted = start_checkout(s, fake, user)
    fake_post(fake, f"/_fake/sessions/{sid}/complete")
    assert balance(s, user) == "10.000000"
    spent = call(s.ports.public, "POST", "/v1/user/charge", {**auth(s), "Idempotency-Key": f"spend-{user}"},
                 json.dumps({"user": user, "amount": "6.00", "metadata": {"why": "test"}}))
    assert spent.status == 200, spent.body
    fake_post(fake, f"/_fake/sessions/{sid}/refund", {"amount": 1000})
    assert fake.deliveries[-1]["status"] == 200
    assert balance(s, user) == "0.000000", "the wallet gave what it had, and never went negative"
    r = chat(s, user)
    assert r.headers.get("x-tollgate-action") == "topup", r.body
    assert "6.000000 owed" in r.json()["choices"][0]["message"]["content"]
    page = call(s.ports.public, "GET", re.search(r"/pay/topup/[0-9a-f]{64}", r.body.decode()).group(0))
    assert b"6.000000" in page.body and b"owed" in page.body


def test_a_lost_webhook_is_credited_once_by_reconcile(paying):
    s, fake = paying
    user = "lost-" + rand.token_hex(4)
    _, sid, _ = start_checkout(s, fake, user, "20.00")
    fake_post(fake, f"/_fake/sessions/{sid}/complete", {"deliver": False})
    assert balance(s, user) == "none"
    argv = [str(binary("tollgate-ledger", s.profile)), "payments", "reconcile", "--since", "1h",
            "--config", str(s.ledger_config), "--database-url", f"sqlite://{s.state_dir / 'ledger.db'}"]
    env = {**s.env(), "MOCK_PROVIDER_PORT": str(s.ports.mock)}
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    lines = [json.loads(l) for l in first.stdout.splitlines()]
    assert {"session": sid, "paywall": "demo", "user": user, "amount": "20.00 USD", "outcome": "credited"} in lines
    assert balance(s, user) == "20.000000"
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert {"session": sid, "paywall": "demo", "user": user, "amount": "20.00 USD",
            "outcome": "already_credited"} in [json.loads(l) for l in second.stdout.splitlines()]
    # The webhook arriving late changes nothing either.
    event_id = [e for e in fake.events.values() if e["data"]["object"].get("id") == sid][-1]["id"]
    assert fake_post(fake, f"/_fake/events/{event_id}/resend").json()["status"] == 200
    assert balance(s, user) == "20.000000" and deposits_of(s, user) == 1


def test_stripe_secrets_stay_out_of_logs_replies_and_the_database(paying):
    s, fake = paying
    user = "quiet-" + rand.token_hex(4)
    path, sid, _ = start_checkout(s, fake, user)
    replies = [json.dumps(call(s.ports.public, "GET", path).headers).encode()]
    fake_post(fake, f"/_fake/sessions/{sid}/complete")
    page = call(s.ports.public, "GET", f"{path}/success?session_id={sid}")
    replies.append(page.body)
    found = secret_leaks(s, [SECRET_KEY, WEBHOOK_SECRET], replies)
    assert not found, found
