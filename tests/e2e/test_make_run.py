"""`make run`'s launcher as an operator uses it: it starts the stack, writes
demo.env, prints how to call it, serves the demo paywall, and stops every
process cleanly on SIGTERM (and SIGINT, as Ctrl-C sends)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import Ledger, call, chat_body
from stack import ROOT, Ports


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def launch(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`stack.py run` started, and what it printed up to its instructions' last line."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "stack.py"), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    deadline = time.monotonic() + 60
    while "Stop: Ctrl-C" not in output:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"launcher exited early:\n{output}")
        output += line
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(output)
    return proc, output


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_starts_serves_and_stops_cleanly(tmp_path, stop_signal):
    ports = Ports.free()
    env = dict(os.environ, TOLLGATE_STATE_DIR=str(tmp_path), TOLLGATE_PORT=str(ports.public),
               ENVOY_ADMIN_PORT=str(ports.admin), TOLLGATE_LEDGER_PORT=str(ports.ledger),
               MOCK_PROVIDER_PORT=str(ports.mock))
    proc, output = launch(env)
    try:
        demo = dict(l.split("=", 1) for l in (tmp_path / "demo.env").read_text().splitlines())
        assert demo["TOLLGATE_BASE_URL"] == f"http://127.0.0.1:{ports.public}/v1"
        key = demo["TOLLGATE_API_KEY"]
        assert f"curl -s http://127.0.0.1:{ports.public}/v1/chat/completions" in output
        assert "from openai import OpenAI" in output and key in output
        assert "Payments                    development processor" in output

        r = call(ports.public, "POST", "/v1/chat/completions",
                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, chat_body("walkthrough"))
        assert r.status == 200 and r.headers["x-tollgate-action"] == "topup"
        assert (tmp_path / "ledger.db").exists()

        # A charge whose settlement is still queued in the filter when the stop
        # arrives is delivered before Envoy exits.
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        assert call(ports.public, "POST", "/v1/user/balance/deposit", auth,
                    json.dumps({"user": "walkthrough", "amount": "1.00"})).status == 200
        paid = call(ports.public, "POST", "/v1/chat/completions", auth, chat_body("walkthrough"))
        assert paid.status == 200 and "x-tollgate-action" not in paid.headers

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0
        assert Ledger(tmp_path / "ledger.db").query(
            "SELECT COUNT(*) AS n FROM charges WHERE request_id = ?", paid.headers["x-request-id"])[0]["n"] == 1
        for port in (ports.public, ports.admin, ports.ledger, ports.mock):
            assert not port_open(port), f"port {port} still served after stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_uses_stripe_when_its_keys_are_set(tmp_path):
    """STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (and STRIPE_API_BASE) switch
    the demo's top-up page to Stripe Checkout, and `make run` says so."""
    sys.path.insert(0, str(ROOT / "tests" / "fakes"))
    import stripe_fake
    ports = Ports.free()
    fake = stripe_fake.Fake("sk_test_makerun_0123", "whsec_makerun_0123", f"http://127.0.0.1:{ports.public}/webhooks/stripe")
    server = stripe_fake.serve(fake)
    env = dict(os.environ, TOLLGATE_STATE_DIR=str(tmp_path), TOLLGATE_PORT=str(ports.public),
               ENVOY_ADMIN_PORT=str(ports.admin), TOLLGATE_LEDGER_PORT=str(ports.ledger),
               MOCK_PROVIDER_PORT=str(ports.mock), STRIPE_SECRET_KEY=fake.secret_key,
               STRIPE_WEBHOOK_SECRET=fake.webhook_secret, STRIPE_API_BASE=fake.base_url)
    proc, output = launch(env)
    try:
        assert f"Payments                    Stripe Checkout (API {fake.base_url})" in output, output
        assert f"http://127.0.0.1:{ports.public}/webhooks/stripe" in output
        assert fake.secret_key not in output and fake.webhook_secret not in output
        key = dict(l.split("=", 1) for l in (tmp_path / "demo.env").read_text().splitlines())["TOLLGATE_API_KEY"]
        r = call(ports.public, "POST", "/v1/chat/completions",
                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, chat_body("stripe-run"))
        link = r.json()["choices"][0]["message"]["content"].split(str(ports.public), 1)[1].split()[0]
        chosen = call(ports.public, "POST", link, {"Content-Type": "application/x-www-form-urlencoded"}, "amount=5.00")
        assert chosen.status == 303 and chosen.headers["location"].startswith(fake.base_url + "/c/pay/cs_test_")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.shutdown()
