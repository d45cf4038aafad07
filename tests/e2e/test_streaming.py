"""Streaming through real Envoy: the OpenAI SDK streams text and tool calls,
the filter forces usage upstream and hides it from clients that did not ask,
and every way a stream can end is charged exactly once with the right source."""

import http.client
import json
import time

import openai
import pytest

from helpers import deposit


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.secrets.demo_key, max_retries=0)


@pytest.fixture
def funded(stack, auth, user):
    assert deposit(stack, auth, user, "5.00").status == 200
    return user


def stream(client, user, **extra):
    raw = client.chat.completions.with_raw_response.create(
        model="mock-gpt", user=user, stream=True, messages=[{"role": "user", "content": "Stream me a reply"}], **extra)
    return raw.headers["x-request-id"], list(raw.parse())


def test_streamed_text_arrives_whole_and_usage_stays_hidden(client, ledger, funded):
    request_id, chunks = stream(client, funded)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock provider. You said: Stream me a reply"
    assert all(c.usage is None for c in chunks), "the usage chunk reached a client that did not ask for it"
    assert all(c.choices for c in chunks)
    charge = ledger.charge_for(request_id)
    assert charge["usage_source"] == "provider" and charge["outcome"] == "completed"
    assert charge["completion_tokens"] == charge["local_completion_tokens"] > 0


def test_a_client_that_asks_for_usage_gets_it(client, ledger, funded):
    request_id, chunks = stream(client, funded, stream_options={"include_usage": True})
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and not chunks[-1].choices
    charge = ledger.charge_for(request_id)
    assert (charge["prompt_tokens"], charge["completion_tokens"]) == (usage[0].prompt_tokens, usage[0].completion_tokens)


def test_streamed_tool_calls_pass_through_and_count(client, ledger, funded):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request_id, chunks = stream(client, funded, tools=tools)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "lookup"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"query": "Stream me a reply"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    charge = ledger.charge_for(request_id)
    assert charge["completion_tokens"] == charge["local_completion_tokens"] > 0


def open_stream(stack, user, headers):
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.public, timeout=15)
    body = json.dumps({"model": "mock-gpt", "user": user, "stream": True,
                       "messages": [{"role": "user", "content": "A long enough prompt for several chunks of reply"}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json", **headers})
    return conn, conn.getresponse()


@pytest.mark.parametrize("events_read", [0, 1, 5])
def test_a_client_that_leaves_mid_stream_is_charged_what_it_received(stack, ledger, funded, events_read):
    conn, resp = open_stream(stack, funded, {"x-mock-chunk-delay-ms": "150"})
    request_id = resp.getheader("x-request-id")
    received = b""
    while received.count(b"\n\n") < events_read:
        received += resp.read1(4096)
    conn.sock.close()  # the client goes away
    conn.close()
    charge = ledger.charge_for(request_id)
    assert charge["outcome"] == "client_aborted"
    assert charge["usage_source"] == "local"
    assert charge["prompt_tokens"] > 0  # the provider ran the prompt
    assert charge["completion_tokens"] < 20  # a full reply is over 20 tokens
    if events_read == 5:
        assert charge["completion_tokens"] >= 3  # role chunk + at least 3 content chunks reached the filter
    assert ledger.hold_for(request_id)["state"] == "posted"
    time.sleep(0.3)
    assert len(ledger.query("SELECT * FROM charges WHERE request_id = ?", request_id)) == 1


def charge_event(ledger, request_id: str) -> dict:
    rows = ledger.query("SELECT payload FROM events WHERE kind = 'charge.created' AND request_id = ?", request_id)
    assert len(rows) == 1, rows
    return json.loads(rows[0]["payload"])


def test_a_stream_cut_by_the_provider_is_provider_cut_and_bills_the_local_count(stack, ledger, funded):
    conn, resp = open_stream(stack, funded, {"x-mock-cut-after": "4"})
    request_id = resp.getheader("x-request-id")
    try:
        resp.read()
    except http.client.IncompleteRead:
        pass
    conn.close()
    charge = ledger.charge_for(request_id)
    assert charge["outcome"] == "provider_cut", "the provider dropped the stream, not the client"
    assert charge["usage_source"] == "local"
    assert charge["completion_tokens"] > 0
    assert charge_event(ledger, request_id)["outcome"] == "provider_cut"
    time.sleep(0.3)
    assert len(ledger.query("SELECT * FROM charges WHERE request_id = ?", request_id)) == 1


def test_an_error_event_mid_stream_is_provider_error_and_bills_what_streamed(stack, ledger, funded):
    conn, resp = open_stream(stack, funded, {"x-mock-error-after": "4"})
    request_id = resp.getheader("x-request-id")
    body = resp.read().decode()
    conn.close()
    assert '"error"' in body and "[DONE]" not in body
    charge = ledger.charge_for(request_id)
    assert (charge["outcome"], charge["usage_source"]) == ("provider_error", "local")
    assert 0 < charge["completion_tokens"] < 20
    assert charge_event(ledger, request_id)["outcome"] == "provider_error"


def test_a_provider_error_before_any_token_voids_the_hold(stack, ledger, funded):
    conn, resp = open_stream(stack, funded, {"x-mock-status": "503"})
    request_id = resp.getheader("x-request-id")
    assert resp.status == 503
    resp.read()
    conn.close()
    hold = ledger.hold_for(request_id, state="voided")
    assert hold["amount"] > 0
    assert ledger.query("SELECT COUNT(*) AS n FROM charges WHERE request_id = ?", request_id)[0]["n"] == 0


@pytest.mark.parametrize("streamed", [False, True])
def test_json_mode_passes_through(client, ledger, funded, streamed):
    kwargs = dict(model="mock-gpt", user=funded, response_format={"type": "json_object"},
                  messages=[{"role": "user", "content": "answer in JSON"}])
    if streamed:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(**kwargs).choices[0].message.content
    assert json.loads(text) == {"reply": "mock", "echo": "answer in JSON"}


def test_non_streamed_tool_calls_pass_through(client, funded):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    r = client.chat.completions.create(model="mock-gpt", user=funded, tools=tools,
                                       messages=[{"role": "user", "content": "use the tool"}])
    call = r.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("lookup", {"query": "use the tool"})
    assert r.choices[0].finish_reason == "tool_calls"
