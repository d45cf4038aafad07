"""Fallback through real Envoy: a model whose provider answers 503 or 429, or
refuses the connection, is served by the next provider of its route — with
that provider's key, path and model name — before any byte reaches the client.
One hold, one charge, and the charge names the provider that answered."""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path

import pytest
from openai import OpenAI

from helpers import Ledger, call, deposit, secret_leaks
from stack import ROOT, Ports, Stack, free_port

PRICES = 'default_max_output_tokens = 256\ninput_per_m = "1.00"\noutput_per_m = "2.00"\n'
BACKUP_MODEL = "openai/gpt-4o-mini"

# (provider id, kind/flavor, operator key, mock's failure status: None healthy, 0 nothing listening)
PROVIDERS = [
    ("down-503", "openai", f"fbkey-503-{secrets.token_hex(10)}", 503),
    ("down-429", "groq", f"fbkey-429-{secrets.token_hex(10)}", 429),
    ("azure-down", "azure", f"fbkey-azure-{secrets.token_hex(10)}", 503),
    ("refused", "openai", f"fbkey-refused-{secrets.token_hex(10)}", 0),
    ("healthy", "openai", f"fbkey-healthy-{secrets.token_hex(10)}", None),
    ("backup", "openrouter", f"fbkey-backup-{secrets.token_hex(10)}", None),
]
# model → its provider, then its fallbacks (each with the model name it knows)
MODELS = {
    "fb-503": ("down-503", [("backup", BACKUP_MODEL)]),
    "fb-429": ("down-429", [("backup", BACKUP_MODEL)]),
    "fb-azure": ("azure-down", [("backup", BACKUP_MODEL)]),
    "fb-refused": ("refused", [("backup", BACKUP_MODEL)]),
    "fb-healthy": ("healthy", [("backup", BACKUP_MODEL)]),
    "fb-chain": ("refused", [("down-503", "gpt-4o-mini"), ("backup", BACKUP_MODEL)]),
    "fb-all-down": ("down-503", [("down-429", "gpt-4o-mini")]),
}
KEY = {p[0]: p[2] for p in PROVIDERS}
BASE_PATH = {"openai": "/v1", "groq": "/openai/v1", "openrouter": "/api/v1", "azure": ""}


@pytest.fixture(scope="module")
def fallback_stack():
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory(prefix="tollgate-fallback-") as tmp:
        tmp = Path(tmp)
        ports = {p[0]: free_port() for p in PROVIDERS}
        config = (ROOT / "ledger" / "demo.toml").read_text()
        for pid, kind, key, _ in PROVIDERS:
            env = f"E2E_FB_{pid.upper().replace('-', '_')}_KEY"
            mp.setenv(env, key)
            config += (f'\n[[providers]]\nid = "{pid}"\nkind = "{kind}"\ncluster = "{pid}"\n'
                       f'base_url = "http://127.0.0.1:{ports[pid]}{BASE_PATH[kind]}"\napi_key_env = "{env}"\n')
        for model, (provider, fallbacks) in MODELS.items():
            items = ", ".join(f'{{ provider = "{p}", upstream_model = "{m}" }}' for p, m in fallbacks)
            config += (f'\n[[models]]\nname = "{model}"\nprovider = "{provider}"\nupstream_model = "gpt-4o-mini"\n'
                       f'fallbacks = [{items}]\n{PRICES}')
        (tmp / "ledger.toml").write_text(config)
        s = Stack(state_dir=tmp / "state", ports=Ports.free(), ledger_config=tmp / "ledger.toml")
        s.state_dir.mkdir()
        try:
            for pid, kind, key, fail in PROVIDERS:
                if fail != 0:
                    model = BACKUP_MODEL if pid == "backup" else "gpt-4o-mini"
                    s.start_provider_mock(f"mock-{pid}", ports[pid], kind, key, [model], fail_status=fail)
            s.start()
            yield s, ports
        finally:
            s.stop()
            mp.undo()


def stats(port: int) -> dict:
    return call(port, "GET", "/_mock/stats").json()


def ask(stack, model: str, user: str, stream: bool = False):
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    assert deposit(stack, auth, user, "5.00").status == 200
    body = json.dumps({"model": model, "user": user, "stream": stream,
                       "messages": [{"role": "user", "content": "Hello!"}]})
    return call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)


def one_hold_one_charge(stack, request_id: str) -> tuple[dict, dict]:
    ledger = Ledger(stack.state_dir / "ledger.db")
    charge = ledger.charge_for(request_id)
    holds = ledger.query("SELECT * FROM holds WHERE request_id = ?", request_id)
    charges = ledger.query("SELECT * FROM charges WHERE request_id = ?", request_id)
    assert len(holds) == 1 and len(charges) == 1, (holds, charges)
    return holds[0], charge


@pytest.mark.parametrize("model,primary", [
    ("fb-503", "down-503"), ("fb-429", "down-429"), ("fb-refused", "refused"),
    # Another key header (Azure's api-key) and path on the failing try: the
    # next provider must not get it.
    ("fb-azure", "azure-down"),
])
def test_a_failing_provider_falls_back_to_the_next(fallback_stack, model, primary):
    stack, ports = fallback_stack
    backup_before = stats(ports["backup"])["completions"]
    primary_before = stats(ports[primary])["requests"] if primary != "refused" else None
    r = ask(stack, model, f"fb-{model}")
    assert r.status == 200, r.body
    assert r.headers["x-tollgate-provider"] == "backup"
    assert r.json()["choices"][0]["message"]["content"]
    seen = stats(ports["backup"])
    assert seen["completions"] == backup_before + 1
    # The try reached the backup with the backup's key and its name for the model
    # (its mock answers 404 to any other model), and nothing of the route plumbing.
    headers = seen["last_headers"]
    assert headers["authorization"] == f"Bearer {KEY['backup']}"
    assert not any(h.startswith("x-tollgate") for h in headers), headers
    assert "api-key" not in headers, "a key of the failed try reached the next provider"
    if primary_before is not None:
        assert stats(ports[primary])["requests"] == primary_before + 1, "the first provider was not tried"
    hold, charge = one_hold_one_charge(stack, r.headers["x-request-id"])
    assert hold["provider_id"] == primary and hold["state"] == "posted"
    assert charge["provider_id"] == "backup" and charge["amount"] > 0
    moved = Ledger(stack.state_dir / "ledger.db").query(
        "SELECT credit_account FROM transfers WHERE kind = 'provider_cost' AND request_id = ?", r.headers["x-request-id"])
    assert moved == [{"credit_account": "provider_cost:backup"}]


def test_a_healthy_provider_is_used_without_fallback(fallback_stack):
    stack, ports = fallback_stack
    backup_before = stats(ports["backup"])["requests"]
    r = ask(stack, "fb-healthy", "fb-healthy")
    assert r.status == 200, r.body
    assert r.headers["x-tollgate-provider"] == "healthy"
    assert stats(ports["healthy"])["last_headers"]["authorization"] == f"Bearer {KEY['healthy']}"
    assert stats(ports["backup"])["requests"] == backup_before
    _, charge = one_hold_one_charge(stack, r.headers["x-request-id"])
    assert charge["provider_id"] == "healthy"


def test_a_chain_skips_every_failing_provider(fallback_stack):
    stack, ports = fallback_stack
    r = ask(stack, "fb-chain", "fb-chain")
    assert r.status == 200, r.body
    assert r.headers["x-tollgate-provider"] == "backup"
    _, charge = one_hold_one_charge(stack, r.headers["x-request-id"])
    assert charge["provider_id"] == "backup"


def test_when_every_provider_fails_the_hold_is_voided(fallback_stack):
    stack, ports = fallback_stack
    r = ask(stack, "fb-all-down", "fb-all-down")
    assert r.status in (429, 503), r.body
    assert r.error()["message"]
    ledger = Ledger(stack.state_dir / "ledger.db")
    hold = ledger.hold_for(r.headers["x-request-id"], state="voided")
    assert hold["provider_id"] == "down-503"
    assert ledger.query("SELECT * FROM charges WHERE request_id = ?", r.headers["x-request-id"]) == []


def test_streaming_through_a_fallback_with_the_sdk(fallback_stack):
    stack, ports = fallback_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    assert deposit(stack, auth, "fb-sdk", "5.00").status == 200
    client = OpenAI(base_url=stack.base_url, api_key=stack.secrets.demo_key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="fb-503", user="fb-sdk", stream=True, messages=[{"role": "user", "content": "Stream it"}],
    ) as response:
        assert response.headers["x-tollgate-provider"] == "backup"
        request_id = response.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text
    _, charge = one_hold_one_charge(stack, request_id)
    assert charge["provider_id"] == "backup" and charge["usage_source"] == "provider"


def test_fallback_keys_stay_on_their_provider_path(fallback_stack):
    """After the tries above (each with another provider's key), no provider key
    shows up in a reply, in Envoy's or the sidecar's log, or in the database."""
    stack, _ = fallback_stack
    replies = [json.dumps(r.headers).encode() + r.body
               for r in (ask(stack, model, "fb-canary", stream) for model in MODELS for stream in (False, True))]
    leaks = secret_leaks(stack, [key for _, _, key, _ in PROVIDERS], replies)
    assert not leaks, f"provider keys found: {leaks}"
