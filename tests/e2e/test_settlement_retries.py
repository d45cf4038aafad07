"""Settlements outlive a sidecar outage: streams authorized while the sidecar
was up finish while it is down; the filter's root context keeps their
settlements (a visible backlog) and delivers every one exactly once when the
sidecar is back."""

import http.client
import json
import threading
import time

from helpers import call, deposit


def stat(stack, name):
    text = call(stack.ports.admin, "GET", f"/stats?filter={name}").body.decode()
    for line in text.splitlines():
        if line.startswith(f"wasmcustom.{name}:"):
            return int(line.split(":", 1)[1])
    return None


def slow_stream(stack, user, results, i):
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.public, timeout=30)
    body = json.dumps({"model": "mock-gpt", "user": user, "stream": True,
                       "messages": [{"role": "user", "content": f"Stream number {i}, slowly"}]})
    conn.request("POST", "/v1/chat/completions", body=body, headers={
        "Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json",
        "x-mock-chunk-delay-ms": "120"})
    resp = conn.getresponse()
    results[i] = (resp.status, resp.getheader("x-request-id"), resp.read())
    conn.close()


def test_settlements_wait_out_a_sidecar_outage_and_land_once(stack, auth, ledger, user):
    assert deposit(stack, auth, user, "5.00").status == 200
    delivered_before = stat(stack, "tollgate_settlements_delivered") or 0
    results = {}
    threads = [threading.Thread(target=slow_stream, args=(stack, user, results, i)) for i in range(4)]
    for t in threads:
        t.start()
    # Wait until all four are authorized (holds placed), then take the sidecar away.
    deadline = time.monotonic() + 10
    while ledger.query("SELECT COUNT(*) AS n FROM holds WHERE user_id = ?", user)[0]["n"] < 4:
        assert time.monotonic() < deadline, "streams were not authorized"
        time.sleep(0.02)
    stack.stop_one("ledger")
    try:
        for t in threads:
            t.join(timeout=30)
        assert all(status == 200 and b"[DONE]" in body for status, _, body in results.values())
        time.sleep(0.5)  # a few failed deliveries
        assert stat(stack, "tollgate_settlement_backlog") >= 4
        assert stat(stack, "tollgate_settlement_retries") > 0
    finally:
        stack.start_ledger()
    request_ids = [rid for _, rid, _ in results.values()]
    for rid in request_ids:
        charge = ledger.charge_for(rid, timeout=30)
        assert charge["usage_source"] == "provider"
    time.sleep(1)  # any duplicate delivery would land by now
    for rid in request_ids:
        assert len(ledger.query("SELECT * FROM charges WHERE request_id = ?", rid)) == 1
    deadline = time.monotonic() + 10
    while stat(stack, "tollgate_settlement_backlog") != 0:
        assert time.monotonic() < deadline, "backlog did not drain"
        time.sleep(0.1)
    assert stat(stack, "tollgate_settlements_delivered") >= delivered_before + 4
