"""The official OpenAI Python SDK as the client: the paywall's top-up message
is an ordinary reply (also when streamed), and a funded user gets the
provider's answer."""

import openai
import pytest

from helpers import deposit


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.secrets.demo_key, max_retries=0)


def test_topup_message_renders_as_a_normal_reply(client, stack, user):
    r = client.chat.completions.create(model="mock-gpt", user=user, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.role == "assistant"
    assert "/pay/topup/" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_streamed_topup_message_is_a_valid_stream(client, user):
    stream = client.chat.completions.create(
        model="mock-gpt", user=user, stream=True, messages=[{"role": "user", "content": "Hi"}]
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "/pay/topup/" in text


def test_funded_user_gets_the_provider_reply(client, stack, auth, ledger, user):
    assert deposit(stack, auth, user, "1.00").status == 200
    raw = client.chat.completions.with_raw_response.create(
        model="mock-gpt", user=user, messages=[{"role": "user", "content": "Tell me a joke"}]
    )
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from the mock provider. You said: Tell me a joke"
    charge = ledger.charge_for(raw.headers["x-request-id"])
    assert charge["completion_tokens"] == r.usage.completion_tokens


def test_errors_surface_as_sdk_exceptions(stack, user):
    bad = openai.OpenAI(base_url=stack.base_url, api_key="tg_wrong_key_000000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="mock-gpt", user=user, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "invalid_api_key"
