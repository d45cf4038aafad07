"""Fixtures that run the real stack (Envoy with the filter, the ledger
sidecar, the mock provider) on free ports for the end-to-end tests."""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).parent))

from stack import Ports, Stack  # noqa: E402
from helpers import Ledger, call  # noqa: E402

_users = itertools.count()


@pytest.fixture(scope="session")
def stack():
    with tempfile.TemporaryDirectory(prefix="tollgate-e2e-") as tmp:
        s = Stack(state_dir=Path(tmp), ports=Ports.free())
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="session")
def ledger(stack) -> Ledger:
    return Ledger(stack.state_dir / "ledger.db")


@pytest.fixture
def user(request) -> str:
    """A user id no other test uses."""
    return f"{request.node.name[:40]}-{next(_users)}"


@pytest.fixture
def auth(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
