"""Stripe's own library is the reference for `Stripe-Signature`: every case in
tests/fixtures/stripe-signatures.json gets the verdict the official `stripe`
package gives (`WebhookSignature.verify_header` with a 300 s tolerance, the
clock set to the case's `now`), and `stripe.Webhook.construct_event` accepts
the fresh ones. The ledger's verifier is held to the same file
(ledger/src/outbox/webhooks/signature.rs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import stripe

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stripe-signatures.json"
DOC = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"] for c in DOC["cases"]])
def test_stripe_gives_each_case_its_verdict(case, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: case["now"])
    try:
        stripe.WebhookSignature.verify_header(case["payload"], case["header"], DOC["secret"],
                                              tolerance=DOC["tolerance_secs"])
        accepted = True
    except stripe.SignatureVerificationError:
        accepted = False
    assert accepted == case["accepted"]


def test_construct_event_accepts_the_signed_event(monkeypatch):
    case = next(c for c in DOC["cases"] if c["name"] == "signed")
    monkeypatch.setattr(time, "time", lambda: case["now"])
    event = stripe.Webhook.construct_event(case["payload"], case["header"], DOC["secret"])
    assert event["type"] == "checkout.session.completed"
