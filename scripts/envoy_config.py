"""Envoy's configuration as data. `envoy/envoy.yaml` is a complete Envoy
configuration with the local stack's defaults; this module loads it, sets
what a deployment changes (addresses and ports, the .wasm, the filter's
configuration, the provider routes and clusters from `tollgate-ledger
envoy-providers`) and writes it back with `yaml.safe_dump`: no text
templating, so nothing can be quoted or indented wrong.

The benchmark's baseline is the same rendering without the wasm filter: the
provider routes match every request and carry the provider's key, so the
two Envoys differ by the filter alone (same listener, access log, local
replies, log level)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

WASM_FILTER = "envoy.filters.http.wasm"
LEDGER_CLUSTER = "tollgate_ledger"


@dataclass
class EnvoySettings:
    bind_address: str = "127.0.0.1"
    admin_port: int = 9901
    public_port: int = 8080
    ledger_host: str = "127.0.0.1"
    ledger_port: int = 8081
    wasm: str | None = None
    # The filter's JSON configuration (merged over the base file's).
    filter_config: dict = field(default_factory=dict)
    # Provider routes and clusters (`envoy-providers` output), routes first in the virtual host.
    providers: dict | None = None
    # The benchmark baseline: no filter; requests go straight to the provider
    # routes with this key.
    baseline_key: str | None = None


def socket_address(address: str, port: int) -> dict:
    return {"socket_address": {"address": address, "port_value": port}}


def connection_manager(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def set_endpoint(cluster: dict, address: str, port: int) -> None:
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"] = socket_address(address, port)


def render(base: Path, s: EnvoySettings) -> str:
    """The configuration in `base` with the settings applied, as YAML."""
    cfg = yaml.safe_load(base.read_text())
    cfg["admin"]["address"] = socket_address(s.bind_address, s.admin_port)
    resources = cfg["static_resources"]
    for listener in resources["listeners"]:
        listener["address"] = socket_address(s.bind_address, s.public_port)
        hcm = connection_manager(listener)
        host = hcm["route_config"]["virtual_hosts"][0]
        if s.providers:
            host["routes"] = s.providers["routes"] + host["routes"]
        for f in hcm["http_filters"]:
            if f["name"] == WASM_FILTER:
                configure_wasm(f["typed_config"]["config"], s)
        if s.baseline_key is not None:
            make_baseline(hcm, s)
    for cluster in resources["clusters"]:
        if cluster["name"] == LEDGER_CLUSTER:
            set_endpoint(cluster, s.ledger_host, s.ledger_port)
    if s.providers:
        resources["clusters"] += s.providers["clusters"]
    # Wide enough that no value (the filter's JSON) is folded over lines.
    return yaml.safe_dump(cfg, sort_keys=False, width=1 << 16)


def make_baseline(hcm: dict, s: EnvoySettings) -> None:
    """Removes the filter; the first provider route takes every request, with
    the provider's key, as the filter would have routed it."""
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != WASM_FILTER]
    if not s.providers or not s.providers["routes"]:
        raise ValueError("the baseline needs a provider route")
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    route["match"].pop("headers", None)
    route["request_headers_to_add"] = [{
        "header": {"key": "authorization", "value": f"Bearer {s.baseline_key}"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


def configure_wasm(config: dict, s: EnvoySettings) -> None:
    if s.wasm is not None:
        config["vm_config"]["code"]["local"]["filename"] = s.wasm
    filter_config = json.loads(config["configuration"]["value"])
    filter_config.update(s.filter_config)
    config["configuration"]["value"] = json.dumps(filter_config)
