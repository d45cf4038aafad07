"""Limits through real Envoy: a rate limit is a 429 in OpenAI's shape with
Retry-After, a spend cap is an assistant message, and neither reaches the
provider."""

import sqlite3

import pytest

from helpers import call, chat_body, deposit, mock_requests


@pytest.fixture
def limits(stack):
    """Sets the demo paywall's limits in the running ledger, and clears them after."""
    db = stack.state_dir / "ledger.db"

    def set_limits(**values):
        with sqlite3.connect(db, timeout=10) as conn:
            conn.execute("DELETE FROM limits WHERE paywall_id = 'demo'")
            cols = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO limits (paywall_id, {cols}) VALUES ('demo', {marks})", list(values.values()))

    yield set_limits
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("DELETE FROM limits WHERE paywall_id = 'demo'")


def chat(stack, auth, user):
    return call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))


def test_rate_limit_is_429_with_retry_after(stack, auth, user, limits):
    assert deposit(stack, auth, user, "1.00").status == 200
    limits(requests_per_minute=2)
    assert chat(stack, auth, user).status == 200
    assert chat(stack, auth, user).status == 200
    before = mock_requests(stack)
    r = chat(stack, auth, user)
    assert r.status == 429
    assert r.error()["code"] == "rate_limit_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert mock_requests(stack) == before


def test_spend_cap_is_an_assistant_message(stack, auth, user, limits):
    assert deposit(stack, auth, user, "1.00").status == 200
    limits(daily_spend_cap=1)  # one micro-unit: no request fits
    before = mock_requests(stack)
    r = chat(stack, auth, user)
    assert r.status == 200
    assert r.headers["x-tollgate-action"] == "spend_cap"
    content = r.json()["choices"][0]["message"]["content"]
    assert "daily spending limit" in content and "UTC" in content
    assert mock_requests(stack) == before


def test_token_cap_is_a_400(stack, auth, user, limits):
    assert deposit(stack, auth, user, "1.00").status == 200
    limits(max_tokens_per_request=50)
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user, max_tokens=100))
    assert r.status == 400
    err = r.error()
    assert (err["code"], err["param"]) == ("max_tokens_exceeded", "max_tokens")


def test_a_short_balance_gets_a_shorter_answer(stack, auth, ledger, user):
    # mock-gpt: output costs 12 micro-units a token with the markup; 0.002 buys well under 1000.
    assert deposit(stack, auth, user, "0.002").status == 200
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user, max_tokens=1000))
    assert r.status == 200 and "x-tollgate-action" not in r.headers, r.body
    limit = int(r.headers["x-tollgate-max-tokens"])
    assert 16 <= limit < 1000
    charge = ledger.charge_for(r.headers["x-request-id"])
    hold = ledger.hold_for(r.headers["x-request-id"])
    assert hold["max_output_tokens"] == limit and hold["amount"] <= 2000
    assert charge["amount"] <= hold["amount"]
    balance = call(stack.ports.public, "GET", f"/v1/user/balance?user={user}", auth).json()
    assert not balance["balance"].startswith("-")
