"""Small helpers shared by the end-to-end tests: raw HTTP calls through Envoy
and read-only queries of the stack's SQLite ledger."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stack import ROOT, Ports, Stack, free_port


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    def error(self) -> dict:
        """The OpenAI error object, asserting the envelope's shape."""
        doc = self.json()
        assert set(doc) == {"error"}, doc
        err = doc["error"]
        assert set(err) >= {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"], err
        return err


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | str | None = None, chunked: bool = False, timeout: float = 15) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        hdrs = dict(headers or {})
        if chunked:
            conn.putrequest(method, path)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            data = body or b""
            for i in range(0, len(data), 65536):
                part = data[i:i + 65536]
                conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class Ledger:
    """Read-only view of the stack's SQLite ledger."""

    def __init__(self, path: Path):
        self.path = path

    def query(self, sql: str, *args):
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    def snapshot(self) -> dict[str, int]:
        """Row counts of every money and audit table: equal snapshots mean nothing changed."""
        tables = ["transfers", "holds", "charges", "links", "events", "accounts"]
        return {t: self.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in tables}

    def charge_for(self, request_id: str, timeout: float = 10) -> dict:
        """Waits for the settlement (delivered asynchronously by the filter's root context)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query("SELECT * FROM charges WHERE request_id = ?", request_id)
            if rows:
                return rows[0]
            time.sleep(0.05)
        raise AssertionError(f"no charge for request {request_id} after {timeout}s")

    def hold_for(self, request_id: str, timeout: float = 10, state: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query("SELECT * FROM holds WHERE request_id = ?", request_id)
            if rows and (state is None or rows[0]["state"] == state):
                return rows[0]
            time.sleep(0.05)
        raise AssertionError(f"no hold in state {state} for request {request_id} after {timeout}s")


def price_of(rule: dict, prompt: int, cached: int, completion: int) -> int:
    """The ledger's documented price formula, recomputed independently in integers."""
    uncached = prompt - min(cached, prompt)
    raw = uncached * rule["input_per_m"] + min(cached, prompt) * rule["cached_input_per_m"] + completion * rule["output_per_m"]
    scaled = raw * (10_000 + rule["markup_bps"])
    denom = 1_000_000 * 10_000
    return max(-(-scaled // denom), rule["min_charge"])


def mock_requests(stack) -> int:
    """How many chat requests reached the mock provider (it counts them)."""
    return call(stack.ports.mock, "GET", "/_mock/stats").json()["requests"]


def mock_last_headers(stack) -> dict[str, str]:
    return call(stack.ports.mock, "GET", "/_mock/stats").json()["last_headers"]


def deposit(stack, auth: dict[str, str], user: str, amount: str, key: str | None = None) -> Reply:
    headers = dict(auth)
    if key:
        headers["Idempotency-Key"] = key
    return call(stack.ports.public, "POST", "/v1/user/balance/deposit", headers,
                json.dumps({"user": user, "amount": amount}))


def chat_body(user: str | None = "", content: str = "Hello!", **extra) -> str:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": content}], **extra}
    if user:
        body["user"] = user
    return json.dumps(body)


def secret_leaks(stack, secrets: list[str], replies: list[bytes]) -> list[tuple[str, str]]:
    """Where any of `secrets` appears: in the replies given (headers and body),
    Envoy's and the sidecar's logs, the database files, or any text column of
    the database. Empty means none."""
    stack.quiesce_envoy()
    places = {f"reply {i}": blob for i, blob in enumerate(replies)}
    for name in ("envoy", "ledger"):
        places[f"{name} log"] = (stack.state_dir / f"{name}.log").read_bytes()
    for path in stack.state_dir.glob("ledger.db*"):
        places[path.name] = path.read_bytes()
    places.update(database_text(stack.state_dir / "ledger.db"))
    return [(s, where) for s in secrets for where, blob in places.items() if s.encode() in blob]


def database_text(db: Path) -> dict[str, bytes]:
    """Every text column of every table, one blob per table."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for t in tables:
            rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
            out[f"table {t}"] = "\n".join(str(v) for row in rows for v in row if isinstance(v, str)).encode()
        return out
    finally:
        conn.close()


@contextmanager
def running_stack(prefix: str, **settings):
    """A stack of its own (the demo configuration) on free ports, in a
    temporary directory; `settings` are Stack fields."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        s = Stack(state_dir=Path(tmp), ports=Ports.free(), **settings)
        s.start()
        try:
            yield s
        finally:
            s.stop()


@contextmanager
def stack_with_webhook(receiver: type[BaseHTTPRequestHandler], secret: str, server_settings: str = "",
                       events: str | None = None, env: dict[str, str] | None = None):
    """A stack of its own (the demo configuration) whose ledger signs its
    events with `secret` and sends them to `receiver`, served on a free port."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    saved = dict(os.environ)
    os.environ.update({"E2E_WEBHOOK_SECRET": secret, **(env or {})})
    with tempfile.TemporaryDirectory(prefix="tollgate-hooked-") as tmp:
        tmp = Path(tmp)
        config = (ROOT / "ledger" / "demo.toml").read_text().replace(
            "[server]\n", f"[server]\nwebhook_poll_ms = 100\n{server_settings}", 1)
        config += (f'\n[[webhooks]]\nid = "operator"\nurl = "http://127.0.0.1:{port}/hooks"\n'
                   'secret_env = "E2E_WEBHOOK_SECRET"\n' + (f"events = {events}\n" if events else ""))
        (tmp / "ledger.toml").write_text(config)
        s = Stack(state_dir=tmp / "state", ports=Ports.free(), ledger_config=tmp / "ledger.toml")
        s.state_dir.mkdir()
        try:
            s.start()
            yield s
        finally:
            s.stop()
            server.shutdown()
            os.environ.clear()
            os.environ.update(saved)
