"""Limits through real Envoy: a rate limit is a 429 in OpenAI's shape with
Retry-After, a spend cap is an assistant message, and neither reaches the
provider."""

import json
import sqlite3
import threading
import time

import openai
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


def fresh_minute():
    """Per-minute windows are fixed (epoch minutes): start a test that needs
    its requests in one window early enough in it, never near its end."""
    into = time.time() % 60
    if into > 45:
        time.sleep(60 - into + 0.2)


def test_rate_limit_is_429_with_retry_after(stack, auth, user, limits):
    assert deposit(stack, auth, user, "1.00").status == 200
    limits(requests_per_minute=2)
    fresh_minute()
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


def hold_in_flight(stack, auth, user, ledger, delay_ms: int) -> threading.Thread:
    """A request asking for far more output than the balance pays for: its
    hold takes the whole available balance while the provider takes `delay_ms`."""
    headers = {**auth, "x-mock-delay-ms": str(delay_ms)}
    big = threading.Thread(target=call, args=(stack.ports.public, "POST", "/v1/chat/completions", headers,
                                              chat_body(user, max_completion_tokens=100000)))
    big.start()
    deadline = time.monotonic() + 10
    while not ledger.query("SELECT id FROM holds WHERE user_id = ? AND state = 'pending'", user):
        assert time.monotonic() < deadline, "the big request never got its hold"
        time.sleep(0.02)
    return big


def test_a_funded_user_with_a_request_in_flight_is_asked_to_retry_not_to_top_up(stack, auth, ledger, user):
    assert deposit(stack, auth, user, "1.00").status == 200
    big = hold_in_flight(stack, auth, user, ledger, delay_ms=3000)
    before = mock_requests(stack)
    body = json.dumps({"model": "mock-gpt", "user": user, "stream": True,
                       "messages": [{"role": "user", "content": "Hello!"}]})
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
    assert r.status == 429, r.body
    assert "x-tollgate-action" not in r.headers, "a funded user must not be told to top up"
    assert r.error()["code"] == "funds_reserved"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert mock_requests(stack) == before
    big.join()

    # The OpenAI SDK retries a 429 by itself, after Retry-After: once the
    # request in flight is settled, the retry is served.
    big = hold_in_flight(stack, auth, user, ledger, delay_ms=1000)
    client = openai.OpenAI(base_url=stack.base_url, api_key=stack.secrets.demo_key, max_retries=3)
    raw = client.chat.completions.with_raw_response.create(
        model="mock-gpt", user=user, messages=[{"role": "user", "content": "Hello!"}])
    assert raw.http_response.status_code == 200
    assert "x-tollgate-action" not in raw.headers
    assert raw.parse().choices[0].message.content.startswith("Hello from the mock provider")
    big.join()


def test_a_balance_that_is_really_too_low_gets_the_top_up_message(stack, auth, user):
    assert deposit(stack, auth, user, "0.000010").status == 200
    r = chat(stack, auth, user)
    assert r.status == 200
    assert r.headers["x-tollgate-action"] == "topup"
