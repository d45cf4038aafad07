"""Shared mode through real Envoy with the OpenAI SDK: the first reply asks the
user to authorize the app (a normal assistant message with a link), the
consent page is served through Envoy, then the shared wallet pays; revoking
brings the authorization request back."""

import re

import openai

from helpers import call, chat_body, deposit


def shared_auth(stack):
    return {"Authorization": f"Bearer {stack.secrets.shared_key}", "Content-Type": "application/json"}


def ask(stack, user):
    client = openai.OpenAI(base_url=stack.base_url, api_key=stack.secrets.shared_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="mock-gpt", user=user, messages=[{"role": "user", "content": "Hello shared"}])
    return raw.headers.get("x-tollgate-action"), raw.parse().choices[0].message.content, raw.headers["x-request-id"]


def test_consent_then_the_shared_wallet_pays(stack, ledger, user):
    action, content, _ = ask(stack, user)
    assert action == "authorize"
    link = re.search(r"http://127\.0\.0\.1:\d+(/pay/connect/[0-9a-f]{64})", content)
    assert link, content
    page = call(stack.ports.public, "GET", link.group(1))
    assert page.status == 200 and b"Authorize" in page.body
    accepted = call(stack.ports.public, "POST", link.group(1), {"Content-Type": "application/x-www-form-urlencoded"}, "")
    assert accepted.status == 200
    assert call(stack.ports.public, "POST", link.group(1), {"Content-Type": "application/x-www-form-urlencoded"}, "").status == 404

    action, content, _ = ask(stack, user)
    assert action == "topup", content  # connected, but the shared wallet is empty
    assert deposit(stack, shared_auth(stack), user, "1.00").status == 200
    action, content, request_id = ask(stack, user)
    assert action is None and content.startswith("Hello from the mock provider")
    hold = ledger.hold_for(request_id, state="posted")
    assert hold["wallet_account"] == f"wallet:shared:{user}"

    # The isolated demo app keeps its own wallet for the same user id.
    isolated = call(stack.ports.public, "POST", "/v1/chat/completions",
                    {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"},
                    chat_body(user))
    assert isolated.headers["x-tollgate-action"] == "topup"

    # Revoked: the app must ask again, and its balance reads are refused.
    r = call(stack.ports.public, "GET", f"/v1/user/disconnect?user={user}", shared_auth(stack))
    assert r.status == 200 and r.json()["revoked"] is True
    action, _, _ = ask(stack, user)
    assert action == "authorize"
    assert call(stack.ports.public, "GET", f"/v1/user/balance?user={user}", shared_auth(stack)).status == 404
