"""Provider kinds through real Envoy, with the operator's keys (built-in) and
with a paywall's own keys (BYOK): one mock per kind imitates the provider's
path and key header (Azure's api-key, deployment path and api-version;
OpenRouter's and Groq's paths; Together, Mistral, Anthropic and vLLM on OpenAI's
path and bearer key; a keyless Ollama) and accepts both keys. Each
request reaches its provider with the right credentials and model name and is
charged under that provider, with the provider's cost booked only when the
operator's key was used; a provider that refuses the operator's key voids the
hold; no provider key ever shows up where it should not."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import Ledger, call, deposit, secret_leaks
from stack import ENVOY, ROOT, Ports, Stack, free_port

PRICES = 'default_max_output_tokens = 256\ninput_per_m = "1.00"\noutput_per_m = "2.00"\n'

# (provider id, kind, flavor of its mock, base path, operator key, model asked for, the provider's model name)
PROVIDERS = [
    ("azure-east", "azure", "azure", "", "az-key-1", "gpt-az", "prod-4o"),
    ("openrouter", "openrouter", "openrouter", "/api/v1", "or-key-2", "gpt-or", "openai/gpt-4o"),
    ("groq", "groq", "groq", "/openai/v1", "gq-key-3", "llama-groq", "llama-3.3-70b-versatile"),
    ("local", "ollama", "ollama", "/v1", "", "llama3", "llama3"),
    # Kinds whose API is OpenAI's own shape under their base URL, each through a
    # mock that checks OpenAI's path and bearer key.
    ("together", "together", "openai", "/v1", "tg-key-4", "llama-together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("mistral", "mistral", "openai", "/v1", "ms-key-5", "mistral-small", "mistral-small-latest"),
    ("anthropic", "anthropic", "openai", "/v1", "an-key-6", "claude", "claude-sonnet-4-5"),
    ("vllm", "vllm", "openai", "/v1", "vl-key-7", "qwen", "Qwen/Qwen2.5-7B-Instruct"),
    # No operator key: only paywalls that bring their own can use it.
    ("openai-byok", "openai", "openai", "/v1", "", "gpt-byok", "gpt-4o-mini"),
    ("groq-wrong-key", "groq", "groq", "/openai/v1", "not-the-key", "llama-bad", "llama-3.3-70b-versatile"),
]
# Every provider but the keyless Ollama and the wrong-key entry gets a paywall key (canaries).
BYOK_KEYS = {p[0]: f"byok-{p[0]}-{secrets.token_hex(12)}" for p in PROVIDERS if p[1] != "ollama" and p[0] != "groq-wrong-key"}
REACHABLE = [p for p in PROVIDERS if p[0] != "groq-wrong-key"]


def admin(stack, method: str, path: str, body: dict | None = None):
    headers = {"Authorization": f"Bearer {stack.secrets.admin_token}", "Content-Type": "application/json"}
    return call(stack.ports.ledger, method, f"/admin/v1{path}", headers, json.dumps(body) if body is not None else None)


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
        admin_replies = []
        try:
            for pid, _, flavor, _, key, _, upstream in REACHABLE:
                accepted = ",".join(k for k in (key, BYOK_KEYS.get(pid, "")) if k)
                s.start_provider_mock(f"mock-{pid}", ports[pid], flavor, accepted, [upstream])
            s.start()
            # A second paywall that brings its own provider keys, set through the admin API.
            created = admin(s, "POST", "/paywalls", {"id": "byok-app", "name": "BYOK app"})
            assert created.status == 201, created.body
            byok_paywall_key = created.json()["key"]["key"]
            for pid, key in BYOK_KEYS.items():
                r = admin(s, "PUT", f"/paywalls/byok-app/provider-keys/{pid}", {"key": key})
                assert r.status == 200, r.body
                admin_replies.append(json.dumps(r.headers).encode() + r.body)
            listed = admin(s, "GET", "/paywalls/byok-app/provider-keys")
            admin_replies.append(listed.body)
            s.byok_paywall_key = byok_paywall_key
            s.admin_replies = admin_replies
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


def key_seen(headers: dict, kind: str) -> str:
    """The key a mock received, from the header its kind uses."""
    if kind == "azure":
        return headers.get("api-key", "")
    return headers.get("authorization", "").removeprefix("Bearer ")


@pytest.mark.parametrize("mode", ["built_in", "byok"])
@pytest.mark.parametrize("pid,kind,model,operator_key", [(p[0], p[1], p[5], p[4]) for p in REACHABLE])
def test_each_kind_is_reached_with_the_right_credentials(providers_stack, mode, pid, kind, model, operator_key):
    stack, ports = providers_stack
    paywall_key = stack.secrets.demo_key if mode == "built_in" else stack.byok_paywall_key
    auth = {"Authorization": f"Bearer {paywall_key}", "Content-Type": "application/json"}
    user = f"prov-{pid}-{mode}"
    assert deposit(stack, auth, user, "5.00").status == 200
    before = stats(ports[pid])["completions"]
    body = json.dumps({"model": model, "user": user, "messages": [{"role": "user", "content": "Hello!"}]})
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
    expected_key = operator_key if mode == "built_in" else BYOK_KEYS.get(pid, "")
    if kind != "ollama" and not expected_key:
        # A provider only paywalls' own keys can use, asked by a paywall without one.
        assert r.status == 503 and r.error()["code"] == "provider_unavailable", r.body
        assert stats(ports[pid])["completions"] == before
        return
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"]
    seen = stats(ports[pid])
    assert seen["completions"] == before + 1, "the request did not reach its provider"
    headers = seen["last_headers"]
    assert key_seen(headers, kind) == expected_key
    assert paywall_key not in json.dumps(headers), "the paywall key reached the provider"
    assert "x-tollgate-route" not in headers
    ledger = Ledger(stack.state_dir / "ledger.db")
    rid = r.headers["x-request-id"]
    hold = ledger.hold_for(rid, state="posted")
    assert (hold["provider_id"], hold["key_source"]) == (pid, "byok" if kind != "ollama" and mode == "byok" else "built_in")
    charge = ledger.charge_for(rid)
    assert charge["amount"] > 0 and charge["key_source"] == hold["key_source"]
    # The operator pays the provider only for requests sent with the operator's key.
    if charge["key_source"] == "built_in":
        assert 0 < charge["provider_cost"] <= charge["amount"]
        moved = ledger.query("SELECT amount, credit_account FROM transfers WHERE kind = 'provider_cost' AND request_id = ?", rid)
        assert moved == [{"amount": charge["provider_cost"], "credit_account": f"provider_cost:{pid}"}]
    else:
        assert charge["provider_cost"] == 0


def test_models_list_what_each_paywall_can_use(providers_stack):
    stack, _ = providers_stack
    def listed(key: str) -> set[str]:
        r = call(stack.ports.public, "GET", "/v1/models", {"Authorization": f"Bearer {key}"})
        assert r.status == 200, r.body
        return {m["id"] for m in r.json()["data"]}
    assert "gpt-byok" not in listed(stack.secrets.demo_key)
    assert {"gpt-byok", "gpt-az", "llama3"} <= listed(stack.byok_paywall_key)


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_refusing_the_operators_key_is_a_502_and_voids_the_hold(providers_stack, stream):
    """Not a 401: that would tell the app its own key is wrong. The provider's
    body (real providers quote part of the key) does not reach the app."""
    stack, ports = providers_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    user = f"prov-wrong-{stream}"
    assert deposit(stack, auth, user, "5.00").status == 200
    body = json.dumps({"model": "llama-bad", "user": user, "stream": stream,
                       "messages": [{"role": "user", "content": "Hi"}]})
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, body)
    assert r.status == 502, r.body
    assert r.error()["code"] == "provider_auth_failed"
    assert b"Incorrect API key" not in r.body
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
    """Canary keys, the operator's and the paywalls' own: after the requests
    above, none appears (nor the master key) in a response (chat or admin), in
    Envoy's or the sidecar's log, or anywhere in the database."""
    stack, ports = providers_stack
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    byok_auth = {"Authorization": f"Bearer {stack.byok_paywall_key}", "Content-Type": "application/json"}
    keys = [p[4] for p in PROVIDERS if p[4]] + list(BYOK_KEYS.values())
    keys += [stack.secrets.provider_key, stack.secrets.master_key]
    replies = list(stack.admin_replies)
    for paywall_auth in (auth, byok_auth):
        assert deposit(stack, paywall_auth, "prov-canary", "5.00").status == 200
        for _, _, _, _, _, model, _ in PROVIDERS:
            for stream in (False, True):
                body = json.dumps({"model": model, "user": "prov-canary", "stream": stream,
                                   "messages": [{"role": "user", "content": "Hello!"}]})
                r = call(stack.ports.public, "POST", "/v1/chat/completions", paywall_auth, body)
                replies.append(json.dumps(r.headers).encode() + r.body)
    leaks = secret_leaks(stack, keys, replies)
    assert not leaks, f"provider keys found: {leaks}"
