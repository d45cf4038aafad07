"""Steps 1–6 of the walking skeleton through real Envoy: a new user is asked
to top up, deposits, chats, and is charged exactly the price of the usage."""

import json
import re

from helpers import call, chat_body, deposit, mock_last_headers, mock_requests, price_of


def chat(stack, auth, body, path="/v1/chat/completions", extra_headers=None):
    headers = dict(auth)
    headers.update(extra_headers or {})
    return call(stack.ports.public, "POST", path, headers, body)


def test_new_user_gets_a_topup_link_as_an_assistant_message(stack, auth, ledger, user):
    before = mock_requests(stack)
    r = chat(stack, auth, chat_body(user))
    assert r.status == 200
    assert r.headers["x-tollgate-action"] == "topup"
    assert r.headers["x-request-id"]
    doc = r.json()
    assert doc["object"] == "chat.completion"
    message = doc["choices"][0]["message"]
    assert message["role"] == "assistant"
    link = re.search(r"http://127\.0\.0\.1:\d+/pay/topup/[0-9a-f]{64}", message["content"]).group(0)
    assert mock_requests(stack) == before, "a denied request reached the provider"
    assert ledger.query("SELECT COUNT(*) AS n FROM holds WHERE user_id = ?", user)[0]["n"] == 0

    # The link opens a real page served by the sidecar (through Envoy).
    path = link.split(str(stack.ports.public), 1)[1]
    page = call(stack.ports.public, "GET", path)
    assert page.status == 200
    assert "text/html" in page.headers["content-type"]
    assert user.encode() in page.body and b"Add funds" in page.body


def test_topup_page_credits_once(stack, auth, user):
    r = call(stack.ports.public, "GET", f"/v1/user/balance/topup?user={user}", auth)
    assert r.status == 200
    path = "/pay/" + r.json()["url"].split("/pay/", 1)[1]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    paid = call(stack.ports.public, "POST", path, form, "amount=3.25")
    assert paid.status == 200 and b"3.250000" in paid.body
    again = call(stack.ports.public, "POST", path, form, "amount=3.25")
    assert again.status == 404
    bal = call(stack.ports.public, "GET", f"/v1/user/balance?user={user}", auth).json()
    assert bal["balance"] == "3.250000"


def test_deposit_is_idempotent_and_amounts_are_decimal_strings(stack, auth, user):
    first = deposit(stack, auth, user, "5.00", key=f"dep-{user}")
    assert first.status == 200
    assert first.json()["balance"] == "5.000000"
    replay = deposit(stack, auth, user, "5.00", key=f"dep-{user}")
    assert replay.status == 200 and replay.body == first.body
    assert replay.headers.get("idempotent-replayed") == "true"
    other = deposit(stack, auth, user, "6.00", key=f"dep-{user}")
    assert other.status == 422 and other.error()["code"] == "idempotency_key_reused"
    bal = call(stack.ports.public, "GET", f"/v1/user/balance?user={user}", auth)
    assert bal.json()["balance"] == "5.000000"
    for bad in ["-1", "abc", "1.0000001", "0"]:
        r = deposit(stack, auth, user, bad)
        assert r.status == 400 and r.error()["param"] == "amount", bad
    r = call(stack.ports.public, "POST", "/v1/user/balance/deposit", auth, json.dumps({"user": user, "amount": 5}))
    assert r.status == 400


def test_funded_user_is_forwarded_and_charged_exactly(stack, auth, ledger, user):
    assert deposit(stack, auth, user, "2.00").status == 200
    before = mock_requests(stack)
    r = chat(stack, auth, chat_body(user, "What is the price of tea?"))
    assert r.status == 200, r.body
    assert "x-tollgate-action" not in r.headers
    request_id = r.headers["x-request-id"]
    doc = r.json()
    assert doc["id"].startswith("chatcmpl-mock")  # the provider's own response, unchanged
    assert doc["choices"][0]["message"]["content"].startswith("Hello from the mock provider")
    usage = doc["usage"]
    assert mock_requests(stack) == before + 1

    # The provider saw its own key, never the paywall key.
    seen = mock_last_headers(stack)
    assert seen["authorization"] == f"Bearer {stack.secrets.provider_key}"
    assert stack.secrets.demo_key not in json.dumps(seen)
    assert "x-tollgate-route" not in seen and "x-paywall-user" not in seen

    charge = ledger.charge_for(request_id)
    rule = ledger.query("SELECT * FROM price_rules WHERE id = ?", charge["price_rule_id"])[0]
    assert charge["model"] == "mock-gpt"
    assert charge["price_version"] == rule["version"] == 1
    assert (charge["prompt_tokens"], charge["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert charge["usage_source"] == "provider"
    assert charge["local_completion_tokens"] == usage["completion_tokens"]
    expected = price_of(rule, usage["prompt_tokens"], 0, usage["completion_tokens"])
    assert charge["amount"] == expected > 0
    hold = ledger.hold_for(request_id, state="posted")
    assert hold["user_id"] == user

    bal = call(stack.ports.public, "GET", f"/v1/user/balance?user={user}", auth).json()
    assert bal["held"] == "0.000000"
    assert round(float(bal["balance"]) * 1_000_000) == 2_000_000 - expected

    entries = call(stack.ports.public, "GET", f"/v1/user/ledger?user={user}", auth).json()["data"]
    assert [e["kind"] for e in entries] == ["deposit", "hold", "post"]
    assert entries[-1]["request_id"] == request_id and entries[-1]["amount_micros"] == -expected


def test_user_id_from_header_or_path(stack, auth, ledger, user):
    assert deposit(stack, auth, user, "1.00").status == 200
    r = chat(stack, auth, chat_body(None), extra_headers={"X-Paywall-User": user})
    assert r.status == 200 and "x-tollgate-action" not in r.headers
    assert ledger.charge_for(r.headers["x-request-id"])["user_id"] == user
    r = chat(stack, auth, chat_body(None), path=f"/v1/{user}/chat/completions")
    assert r.status == 200 and "x-tollgate-action" not in r.headers
    assert ledger.charge_for(r.headers["x-request-id"])["user_id"] == user


def test_models_lists_prices(stack, auth):
    r = call(stack.ports.public, "GET", "/v1/models", auth)
    assert r.status == 200
    model = {m["id"]: m for m in r.json()["data"]}["mock-gpt"]
    assert model["pricing"]["output_per_million"] == "10.000000"
    assert call(stack.ports.public, "GET", "/v1/models").status == 401
