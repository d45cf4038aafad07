"""Metrics after end-to-end requests: the filter's counters and histogram in
Envoy's Prometheus output, the sidecar's families at its own /metrics."""

from __future__ import annotations

import json
import re
import time

from helpers import call, chat_body, deposit
from stack import ROOT


def prometheus_value(text: str, name: str, required: bool = True) -> float:
    """The sum of a metric's samples (any labels) in Prometheus text; a
    labelled family has no sample before its first event."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total += float(m.group(2))
            found = True
    assert found or not required, f"{name} not in the output"
    return total


def snapshot(stack) -> tuple[str, str]:
    envoy = call(stack.ports.admin, "GET", "/stats/prometheus").body.decode()
    sidecar = call(stack.ports.ledger, "GET", "/metrics")
    assert sidecar.headers["content-type"].startswith("text/plain")
    return envoy, sidecar.body.decode()


def test_requests_show_up_in_both_prometheus_outputs(stack, ledger, user):
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    envoy_before, sidecar_before = snapshot(stack)

    # A user without money is asked to top up; then pays and gets an answer.
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))
    assert r.headers["x-tollgate-action"] == "topup"
    assert deposit(stack, auth, user, "5.00").status == 200
    r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body(user))
    assert r.status == 200, r.body
    ledger.charge_for(r.headers["x-request-id"])
    # Bad input never reaches the sidecar.
    assert call(stack.ports.public, "POST", "/v1/chat/completions", auth, "{bad").status == 400
    stack.quiesce_envoy()

    envoy, sidecar = snapshot(stack)
    grew = lambda text, before, name, by=1: prometheus_value(text, name) - prometheus_value(before, name, False) >= by
    for name in ["tollgate_requests_allowed", "tollgate_requests_denied_topup",
                 "tollgate_requests_invalid", "tollgate_tokens_prompt",
                 "tollgate_tokens_completion", "tollgate_settlements_delivered"]:
        assert grew(envoy, envoy_before, name), name
    # Envoy merges histograms at its stats flush (every 5 s by default).
    deadline = time.monotonic() + 12
    while not grew(envoy, envoy_before, "tollgate_callout_latency_ms_count", 2):
        assert time.monotonic() < deadline, "the callout latency histogram never grew"
        time.sleep(0.5)
        envoy, _ = snapshot(stack)
    assert "tollgate_settlement_backlog" in envoy
    assert "tollgate_settle_ack_missed" in envoy

    assert grew(sidecar, sidecar_before, "tollgate_ledger_authorizations_total", 2)
    assert 'tollgate_ledger_authorizations_total{decision="action",reason="topup"}' in sidecar
    assert 'tollgate_ledger_authorizations_total{decision="allow",reason="allowed"}' in sidecar
    assert 'tollgate_ledger_settlements_total{outcome="posted"}' in sidecar
    assert grew(sidecar, sidecar_before, "tollgate_ledger_settle_duration_seconds_count")
    for family in ["tollgate_ledger_balances_depleted_total", "tollgate_ledger_hold_expiries_total",
                   "tollgate_ledger_database_errors_total"]:
        assert f"# TYPE {family} counter" in sidecar


def test_metrics_are_not_reachable_through_the_public_listener(stack):
    r = call(stack.ports.public, "GET", "/metrics")
    assert r.status == 404 and json.loads(r.body)["error"]["code"] == "not_found"


def test_the_grafana_dashboard_uses_only_metrics_that_exist(stack):
    """Every metric a dashboard panel queries is one the filter or the sidecar exports."""
    envoy, sidecar = snapshot(stack)
    # Sample names, and declared families (a labelled one has no sample before its first event).
    exported = {m.group(1) for text in (envoy, sidecar)
                for m in re.finditer(r"^(?:# TYPE )?([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? ", text, re.M)}
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tollgate-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b(tollgate_[a-z0-9_]+)", e)}
    assert used and used <= exported, sorted(used - exported)
    # And every family of ours is on the dashboard.
    ours = {n for n in exported if n.startswith("tollgate_")}
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in ours}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert base <= shown, sorted(base - shown)
