"""Fixtures that run the real stack (Envoy with the filter, the ledger
sidecar, the mock provider) on free ports for the end-to-end tests."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).parent))

from helpers import Ledger, call, running_stack  # noqa: E402

_users = itertools.count()


@pytest.fixture(scope="session")
def stack():
    with running_stack("tollgate-e2e-") as s:
        yield s


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
