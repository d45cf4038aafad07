"""The Stripe fake (tests/fakes/stripe_fake.py) is held to Stripe's own
client: the official `stripe` package, pointed at it, creates, retrieves and
lists Checkout Sessions with the parameters the ledger sends, and gets
Stripe's own error classes for what Stripe refuses (unknown parameters,
non-integer amounts, missing required fields, a wrong key, an idempotency
key reused with other parameters). The fake's webhook signatures pass
`stripe.Webhook.construct_event`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import stripe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import stripe_fake  # noqa: E402

KEY = "sk_test_reference_0123456789"
WEBHOOK_SECRET = "whsec_reference_0123456789"


@pytest.fixture(scope="module")
def client():
    fake = stripe_fake.Fake(KEY, WEBHOOK_SECRET)
    server = stripe_fake.serve(fake)
    yield fake, stripe.StripeClient(KEY, base_addresses={"api": fake.base_url}, max_network_retries=0)
    server.shutdown()


def params(**overrides) -> dict:
    """What the ledger sends (ledger/src/payments/stripe/start.rs), as the client's dict."""
    p = {
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 1000,
                                                       "product_data": {"name": "Balance top-up: App"}}}],
        "success_url": "http://127.0.0.1:8080/pay/topup/t/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:8080/pay/topup/t/cancel",
        "client_reference_id": "ab" * 32,
        "metadata": {"tollgate_paywall": "app", "tollgate_user": "alice", "tollgate_link": "ab" * 32},
        "payment_intent_data": {"metadata": {"tollgate_paywall": "app", "tollgate_user": "alice"}},
    }
    p.update(overrides)
    return p


def test_the_official_client_creates_retrieves_and_lists_sessions(client):
    fake, c = client
    session = c.v1.checkout.sessions.create(params(), options={"idempotency_key": "ref-1"})
    assert session.id.startswith("cs_test_") and session.amount_total == 1000 and session.currency == "usd"
    assert session.metadata["tollgate_user"] == "alice" and session.url.endswith(session.id)
    assert c.v1.checkout.sessions.create(params(), options={"idempotency_key": "ref-1"}).id == session.id
    assert c.v1.checkout.sessions.retrieve(session.id).payment_status == "unpaid"
    fake.webhook_url = ""  # no endpoint: complete without delivering
    fake.complete(session.id, deliver=False)
    listed = c.v1.checkout.sessions.list({"created": {"gte": 0}, "status": "complete", "limit": 100})
    assert [s.id for s in listed.data] == [session.id] and listed.has_more is False
    intent = c.v1.checkout.sessions.retrieve(session.id).payment_intent
    assert [s.id for s in c.v1.checkout.sessions.list({"payment_intent": intent}).data] == [session.id]


@pytest.mark.parametrize("overrides,fragment", [
    ({"bogus": "1"}, "unknown parameter: bogus"),
    ({"line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": "10.00",
                                                     "product_data": {"name": "x"}}}]}, "Invalid integer"),
    ({"line_items": [{"quantity": 1, "price_data": {"unit_amount": 1000, "product_data": {"name": "x"}}}]},
     "line_items[0][price_data][currency]"),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 1000, "product_data": {"name": "x"}}}]},
     "line_items[0][quantity]"),
    ({"line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 10,
                                                     "product_data": {"name": "x"}}}]}, "minimum charge"),
    ({"metadata": {"k" * 41: "v"}}, "metadata"),
])
def test_what_stripe_refuses_the_fake_refuses(client, overrides, fragment):
    _, c = client
    with pytest.raises(stripe.InvalidRequestError) as refused:
        c.v1.checkout.sessions.create(params(**overrides))
    assert fragment in str(refused.value)
    assert refused.value.http_status == 400


def test_keys_and_idempotency_as_stripe_enforces_them(client):
    fake, c = client
    wrong = stripe.StripeClient("sk_test_wrong", base_addresses={"api": fake.base_url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        wrong.v1.checkout.sessions.list()
    c.v1.checkout.sessions.create(params(), options={"idempotency_key": "ref-2"})
    with pytest.raises(stripe.IdempotencyError):
        c.v1.checkout.sessions.create(params(cancel_url="http://elsewhere/"), options={"idempotency_key": "ref-2"})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        c.v1.checkout.sessions.retrieve("cs_test_nothing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_the_fakes_signatures_pass_construct_event():
    fake = stripe_fake.Fake(KEY, WEBHOOK_SECRET)
    event = fake.emit("checkout.session.completed", {"id": "cs_test_x", "object": "checkout.session"}, deliver=False)
    body = json.dumps(event).encode()
    header = stripe_fake.sign(WEBHOOK_SECRET, body)
    assert stripe.Webhook.construct_event(body, header, WEBHOOK_SECRET).id == event["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, stripe_fake.sign("whsec_other", body), WEBHOOK_SECRET)
