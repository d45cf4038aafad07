"""Provider kinds through real Envoy, built-in keys: one mock per kind imitates
the provider's path and key header (Azure's api-key, deployment path and
api-version; OpenRouter's and Groq's paths; a keyless Ollama). Each request
reaches its provider with the right credentials and model name, and is charged
under that provider; a provider that refuses the operator's key voids the hold."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import Ledger, call, deposit
from stack import ENVOY, ROOT, Ports, Stack, free_port

PRICES = 'default_max_output_tokens = 256\ninput_per_m = "1.00"\noutput_per_m = "2.00"\n'

# (provider id, kind, flavor of its mock, base path, key, model asked for, the provider's model name)
PROVIDERS = [
    ("azure-east", "azure", "azure", "", "az-key-1", "gpt-az", "prod-4o"),
    ("openrouter", "openrouter", "openrouter", "/api/v1", "or-key-2", "gpt-or", "openai/gpt-4o"),
    ("groq", "groq", "groq", "/openai/v1", "gq-key-3", "llama-groq", "llama-3.3-70b-versatile"),
    ("local", "ollama", "ollama", "/v1", "", "llama3", "llama3"),
    ("groq-wrong-key", "groq", "groq", "/openai/v1", "not-the-key", "llama-bad", "llama-3.3-70b-versatile"),
]


@pytest.fixture(scope="module")
def providers_stack(monkeypatch_module):
    with tempfile.TemporaryDirectory(prefix="tollgate-providers-") as tmp:
        tmp = Path(tmp)
        ports = {p[0]: free_port() for p in PROVIDERS}
        config = (ROOT / "ledger" / "demo.toml").read_text()
        for pid, kind, _, base, key, model, upstream in PROVIDERS:
            env = f"E2E_{pid.upper().replace('-', '_')}_KEY"
            # The wrong-key provider shares groq's mock but holds another key.
            port = ports["groq"] if pid == "groq-wrong-key" else ports[pid]
            config += f'\n[[providers]]\nid = "{pid}"\nkind = "{kind}"\ncluster = "{pid}"\n'
            config += f'base_url = "http://127.0.0.1:{port}{base}"\n'
            if key:
                config += f'api_key_env = "{env}"\n'
                monkeypatch_module.setenv(env, key)
            config += f'\n[[models]]\nname = "{model}"\nprovider = "{pid}"\nupstream_model = "{upstream}"\n{PRICES}'
        (tmp / "ledger.toml").write_text(config)
        s = Stack(state_dir=tmp / "state", ports=Ports.free(), ledger_config=tmp / "ledger.toml")
        s.state_dir.mkdir()
        try:
            for pid, _, flavor, _, key, _, upstream in PROVIDERS:
                if pid != "groq-wrong-key":
                    s.start_provider_mock(f"mock-{pid}", ports[pid], flavor, key, [upstream])
            s.start()
            yield s, ports
        finally:
            s.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def stats(port: int) -> dict:
    return call(port, "GET", "/_mock/stats").json()


@pytest.mark.parametrize("pid,model", [(p[0], p[5]) for p in PROVIDERS if p[0] != "groq-wrong-key"])
def test_each_kind_is_reached_with_its_own_credentials(providers_stack, pid, model):
    stack, ports = providers_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    user = f"prov-{pid}"
    assert deposit(stack, auth, user, "5.00").status == 200
    before = stats(ports[pid])["completions"]
    body = json.dumps({"model": model, "user": user, "messages": [{"role": "user", "content": "Hello!"}]})
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"]
    seen = stats(ports[pid])
    assert seen["completions"] == before + 1, "the request did not reach its provider"
    headers = seen["last_headers"]
    assert stack.secrets.demo_key not in json.dumps(headers), "the paywall key reached the provider"
    assert "x-tollgate-route" not in headers
    ledger = Ledger(stack.state_dir / "ledger.db")
    hold = ledger.hold_for(r.headers["x-request-id"], state="posted")
    assert hold["provider_id"] == pid
    assert ledger.charge_for(r.headers["x-request-id"])["amount"] > 0


def test_a_provider_refusing_the_operators_key_voids_the_hold(providers_stack):
    stack, ports = providers_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    assert deposit(stack, auth, "prov-wrong", "5.00").status == 200
    body = json.dumps({"model": "llama-bad", "user": "prov-wrong", "messages": [{"role": "user", "content": "Hi"}]})
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
    assert r.status == 401, r.body
    hold = Ledger(stack.state_dir / "ledger.db").hold_for(r.headers["x-request-id"], state="voided")
    assert hold["provider_id"] == "groq-wrong-key"


def test_generated_clusters_for_public_providers_pass_envoys_validation(tmp_path, monkeypatch):
    """TLS with SNI and certificate checks for every public kind, as Envoy itself parses it."""
    config = (ROOT / "ledger" / "demo.toml").read_text()
    for kind in ["openai", "openrouter", "groq", "together", "mistral", "anthropic"]:
        monkeypatch.setenv(f"VALIDATE_{kind.upper()}_KEY", "k")
        config += f'\n[[providers]]\nid = "{kind}"\nkind = "{kind}"\ncluster = "{kind}"\napi_key_env = "VALIDATE_{kind.upper()}_KEY"\n'
    config += '\n[[providers]]\nid = "az"\nkind = "azure"\ncluster = "az"\nbase_url = "https://contoso.openai.azure.com"\napi_key_env = "VALIDATE_OPENAI_KEY"\n'
    (tmp_path / "ledger.toml").write_text(config)
    s = Stack(state_dir=tmp_path, ports=Ports.free(), ledger_config=tmp_path / "ledger.toml")
    resources = s.provider_resources()
    tls = [c for c in resources["clusters"] if "transport_socket" in c]
    assert {c["transport_socket"]["typed_config"]["sni"] for c in tls} == {
        "api.openai.com", "openrouter.ai", "api.groq.com", "api.together.xyz", "api.mistral.ai",
        "api.anthropic.com", "contoso.openai.azure.com"}
    rendered = s.render_envoy_config()
    check = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_provider_keys_never_leave_the_provider_path(providers_stack):
    """Canary keys: after the requests above, no provider key appears in a
    response, in Envoy's or the sidecar's log, or anywhere in the database."""
    stack, ports = providers_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    keys = [p[4] for p in PROVIDERS if p[4]] + [stack.secrets.provider_key]
    assert deposit(stack, auth, "prov-canary", "5.00").status == 200
    replies = []
    for _, _, _, _, _, model, _ in PROVIDERS:
        for stream in (False, True):
            body = json.dumps({"model": model, "user": "prov-canary", "stream": stream,
                               "messages": [{"role": "user", "content": "Hello!"}]})
            r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
            replies.append(json.dumps(r.headers).encode() + r.body)
    stack.quiesce_envoy()
    places = {f"reply {i}": blob for i, blob in enumerate(replies)}
    for name in ("envoy", "ledger"):
        places[f"{name} log"] = (stack.state_dir / f"{name}.log").read_bytes()
    for path in stack.state_dir.glob("ledger.db*"):
        places[path.name] = path.read_bytes()
    leaks = [(key, where) for key in keys for where, blob in places.items() if key.encode() in blob]
    assert not leaks, f"provider keys found: {leaks}"
