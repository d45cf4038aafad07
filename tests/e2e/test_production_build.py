"""The binary operators run (`cargo build`, no `faults` feature) carries no
crash-test hooks: TOLLGATE_FAULT_PAUSE set in its environment pauses nothing."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from helpers import Ledger, call, chat_body, deposit
from stack import Ports, Stack, binary

PAUSE_EVERYWHERE = ",".join(f"{point}=20000" for point in (
    "settle.before_commit", "settle.after_commit", "movement.before_commit", "movement.after_commit"))


def test_the_operators_binary_has_no_fault_hooks():
    text = binary("tollgate-ledger").read_bytes()
    assert b"TOLLGATE_FAULT_PAUSE" not in text and b"fault injection" not in text


def test_fault_pause_set_on_the_operators_binary_pauses_nothing(monkeypatch):
    monkeypatch.setenv("TOLLGATE_FAULT_PAUSE", PAUSE_EVERYWHERE)
    with tempfile.TemporaryDirectory(prefix="tollgate-nofaults-") as tmp:
        stack = Stack(state_dir=Path(tmp), ports=Ports.free())
        stack.start()
        try:
            auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
            started = time.monotonic()
            assert deposit(stack, auth, "nofaults", "5.00", key="nofaults-1").status == 200
            r = call(stack.ports.public, "POST", "/v1/chat/completions", auth, chat_body("nofaults"))
            assert r.status == 200, r.body
            Ledger(stack.state_dir / "ledger.db").charge_for(r.headers["x-request-id"], timeout=5)
            assert time.monotonic() - started < 5, "something paused"
            assert "fault injection" not in stack.log_tail("ledger", 400)
        finally:
            stack.stop()
