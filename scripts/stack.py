#!/usr/bin/env python3
"""Starts and stops the local Tollgate stack: mock provider, ledger sidecar and
real Envoy with the filter. `make run` uses it in the foreground; the
end-to-end tests import it to run isolated stacks on free ports.

Usage: stack.py run   (ports from TOLLGATE_PORT, ENVOY_ADMIN_PORT,
                        TOLLGATE_LEDGER_PORT, MOCK_PROVIDER_PORT; state and
                        logs in TOLLGATE_STATE_DIR, default .tollgate/)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("TOLLGATE_PROFILE", "debug")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    public: int = 8080
    admin: int = 9901
    ledger: int = 8081
    mock: int = 8082

    @classmethod
    def from_env(cls) -> "Ports":
        env = os.environ.get
        return cls(
            public=int(env("TOLLGATE_PORT", "8080")),
            admin=int(env("ENVOY_ADMIN_PORT", "9901")),
            ledger=int(env("TOLLGATE_LEDGER_PORT", "8081")),
            mock=int(env("MOCK_PROVIDER_PORT", "8082")),
        )

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port(), free_port())


@dataclass
class Secrets:
    """Keys and secrets of a local stack, handed to the processes as environment variables."""
    demo_key: str
    shared_key: str
    admin_token: str
    internal_secret: str
    provider_key: str
    master_key: str

    ENV = {
        "demo_key": "TOLLGATE_DEMO_KEY",
        "shared_key": "TOLLGATE_DEMO_SHARED_KEY",
        "admin_token": "TOLLGATE_ADMIN_TOKEN",
        "internal_secret": "TOLLGATE_INTERNAL_SECRET",
        "provider_key": "MOCK_PROVIDER_KEY",
        "master_key": "TOLLGATE_MASTER_KEY",
    }

    @classmethod
    def generate(cls) -> "Secrets":
        return cls(
            demo_key="tg_demo_" + secrets.token_hex(16),
            shared_key="tg_shared_" + secrets.token_hex(16),
            admin_token="tg_admin_" + secrets.token_hex(24),
            internal_secret=secrets.token_hex(24),
            provider_key="sk-mock-" + secrets.token_hex(16),
            master_key=secrets.token_hex(32),
        )

    def env(self) -> dict[str, str]:
        return {var: getattr(self, field) for field, var in self.ENV.items()}

    @classmethod
    def load_or_create(cls, path: Path) -> "Secrets":
        """Keeps keys stable across `make run`s (the ledger stores only hashes);
        values missing from an older file are generated and added."""
        stored = {}
        if path.exists():
            stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        fresh = cls.generate()
        s = cls(**{field: stored.get(var, getattr(fresh, field)) for field, var in cls.ENV.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in s.env().items()))
        path.chmod(0o600)
        return s


def binary(name: str, profile: str = PROFILE) -> Path:
    return ROOT / "target" / profile / name


WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate_filter.wasm"
ENVOY = ROOT / ".venv" / "bin" / "envoy"


# Envoy's own log as JSON lines (`%j` is the message, JSON-escaped); the filter's
# lines carry `request_id=…` in the message.
ENVOY_JSON_LOG_FORMAT = '{"time":"%Y-%m-%dT%T.%fZ","level":"%l","component":"%n","message":"%j"}'


def json_logs() -> bool:
    """TOLLGATE_LOG_JSON=true: Envoy and the sidecar log JSON lines (the sidecar reads it itself)."""
    return os.environ.get("TOLLGATE_LOG_JSON", "").lower() in ("1", "true", "yes")


def envoy_providers(ledger_config: Path, wasm: str, env: dict[str, str] | None = None,
                    profile: str = PROFILE) -> dict:
    """`tollgate-ledger envoy-providers`: Envoy clusters and routes for a ledger config's providers."""
    out = subprocess.run([str(binary("tollgate-ledger", profile)), "envoy-providers",
                          "--config", str(ledger_config), "--wasm", wasm],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Stack:
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    secrets: Secrets = field(default_factory=Secrets.generate)
    database_url: str | None = None
    callout_timeout_ms: int = 2000
    max_body_bytes: int = 1048576
    # More of the filter's configuration (e.g. {"settle_before_release": False}).
    filter_overrides: dict = field(default_factory=dict)
    # The benchmark's baseline: the same Envoy without the filter.
    baseline: bool = False
    ledger_config: Path = ROOT / "ledger" / "demo.toml"
    envoy_template: Path = ROOT / "envoy" / "envoy.yaml"
    profile: str = PROFILE
    # Envoy's worker threads (each runs its own wasm VM).
    concurrency: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}/v1"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.secrets.env())
        return env

    def provider_resources(self) -> dict:
        """Envoy clusters and routes for the ledger config's providers."""
        env = self.env()
        env["MOCK_PROVIDER_PORT"] = str(self.ports.mock)
        return envoy_providers(self.ledger_config, str(WASM), env, self.profile)

    def render_envoy_config(self) -> Path:
        paywall = self.envoy_template == ROOT / "envoy" / "envoy.yaml"
        text = envoy_config.render(self.envoy_template, envoy_config.EnvoySettings(
            admin_port=self.ports.admin,
            public_port=self.ports.public,
            ledger_port=self.ports.ledger,
            wasm=str(WASM),
            filter_config={
                "internal_secret": self.secrets.internal_secret,
                "callout_timeout_ms": self.callout_timeout_ms,
                "max_body_bytes": self.max_body_bytes,
                **self.filter_overrides,
            },
            providers=self.provider_resources() if paywall else None,
            baseline_key=self.secrets.provider_key if self.baseline else None,
        ))
        out = self.state_dir / "envoy.yaml"
        # It carries the internal secret: readable by this user only.
        out.touch(mode=0o600)
        out.chmod(0o600)
        out.write_text(text)
        return out

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.state_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )

    def _wait(self, name: str, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.state_dir / (name + '.log')}:\n"
                                   + self.log_tail(name))
            if http_ok(url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n" + self.log_tail(name))

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.state_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start_mock(self) -> None:
        env = self.env()
        env["MOCK_PROVIDER_LISTEN"] = f"127.0.0.1:{self.ports.mock}"
        self._spawn("mock-provider", [str(binary("tollgate-mock-provider", self.profile))], env)
        self._wait("mock-provider", f"http://127.0.0.1:{self.ports.mock}/healthz")

    def start_provider_mock(self, name: str, port: int, flavor: str, key: str, models: list[str],
                            fail_status: int | None = None) -> None:
        """Another mock provider, imitating `flavor` (its path and key header)."""
        env = self.env()
        env.update(MOCK_PROVIDER_LISTEN=f"127.0.0.1:{port}", MOCK_PROVIDER_FLAVOR=flavor,
                   MOCK_PROVIDER_KEY=key, MOCK_PROVIDER_MODELS=",".join(models))
        if fail_status:
            env["MOCK_PROVIDER_FAIL_STATUS"] = str(fail_status)
        self._spawn(name, [str(binary("tollgate-mock-provider", self.profile))], env)
        self._wait(name, f"http://127.0.0.1:{port}/healthz")

    def start_ledger(self) -> None:
        env = self.env()
        env.update(
            TOLLGATE_LEDGER_LISTEN=f"127.0.0.1:{self.ports.ledger}",
            TOLLGATE_PUBLIC_URL=self.public_url,
            TOLLGATE_DATABASE_URL=self.database_url or f"sqlite://{self.state_dir / 'ledger.db'}",
            MOCK_PROVIDER_PORT=str(self.ports.mock),  # the demo config's mock base_url
        )
        self._spawn("ledger", [str(binary("tollgate-ledger", self.profile)), "serve", "--config", str(self.ledger_config)], env)
        self._wait("ledger", f"http://127.0.0.1:{self.ports.ledger}/healthz")

    def start_envoy(self) -> None:
        config = self.render_envoy_config()
        argv = [
            str(ENVOY), "-c", str(config), "--concurrency", str(self.concurrency), "--use-dynamic-base-id",
            "--log-level", "warn", "--component-log-level", "wasm:info",
            # Access log lines written within a quarter second (default: 10 s).
            "--file-flush-interval-msec", "250",
        ]
        if json_logs():
            argv += ["--log-format", ENVOY_JSON_LOG_FORMAT]
        self._spawn("envoy", argv, self.env())
        self._wait("envoy", f"http://127.0.0.1:{self.ports.admin}/ready")

    def start(self) -> "Stack":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for path in (binary("tollgate-ledger", self.profile), binary("tollgate-mock-provider", self.profile), WASM, ENVOY):
            if not path.exists():
                raise RuntimeError(f"{path} is missing: run `make build` first")
        try:
            self.start_mock()
            self.start_ledger()
            self.start_envoy()
        except Exception:
            self.stop()
            raise
        return self

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def quiesce_envoy(self, timeout: float = 5.0) -> None:
        """Waits for in-flight requests to finish and for the filter's root
        context to deliver queued settlements (it does so every tick, 100 ms)
        before Envoy is stopped: its queue lives in memory."""
        proc = self.procs.get("envoy")
        if proc is None or proc.poll() is not None:
            return
        url = f"http://127.0.0.1:{self.ports.admin}/stats?filter=downstream_rq_active$"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    lines = r.read().decode().splitlines()
                # The admin listener counts this very request; only the public one matters.
                active = sum(int(line.rsplit(":", 1)[1]) for line in lines
                             if ":" in line and not line.startswith("http.admin."))
            except (urllib.error.URLError, OSError, ValueError):
                break
            if active == 0:
                break
            time.sleep(0.05)
        time.sleep(0.5)

    def stop(self) -> None:
        # Envoy first, so no request arrives at a stopped sidecar.
        self.quiesce_envoy()
        for name in ["envoy", "ledger"] + [n for n in self.procs if n not in ("envoy", "ledger")]:
            self.stop_one(name)


def payments_processor(env: dict[str, str]) -> str:
    """The demo ledger's processor (its TOLLGATE_PAYMENTS): Stripe when both
    STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET are set, else the development one."""
    return "stripe" if env.get("STRIPE_SECRET_KEY") and env.get("STRIPE_WEBHOOK_SECRET") else "dev"


def payments_line(stack: Stack) -> str:
    env = stack.env()
    if env.get("TOLLGATE_PAYMENTS") == "stripe":
        api = env.get("STRIPE_API_BASE") or "https://api.stripe.com"
        return (f"Stripe Checkout (API {api}); point Stripe's webhook (or `stripe listen --forward-to`) at "
                f"{stack.public_url}/webhooks/stripe")
    return ("development processor: the top-up page credits the amount chosen, no money moves "
            "(set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET for Stripe Checkout)")


def print_instructions(stack: Stack, demo_env: Path) -> None:
    key = stack.secrets.demo_key
    base = stack.base_url
    print(f"""
Tollgate is running.
  OpenAI-compatible endpoint  {base}
  Envoy admin                 http://127.0.0.1:{stack.ports.admin}
  Ledger sidecar              http://127.0.0.1:{stack.ports.ledger}  (SQLite: {stack.state_dir / 'ledger.db'})
  Mock provider               http://127.0.0.1:{stack.ports.mock}
  Demo credentials            {demo_env}
  Admin API (sidecar only)    http://127.0.0.1:{stack.ports.ledger}/admin/v1  (token: TOLLGATE_ADMIN_TOKEN in {stack.state_dir / 'secrets.env'})
  Payments                    {payments_line(stack)}

Try it (a new user first gets a top-up link):
  curl -s {base}/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"model":"mock-gpt","user":"alice","messages":[{{"role":"user","content":"Hello!"}}]}}'

Add funds, then chat again:
  curl -s {base}/user/balance/deposit -H 'Authorization: Bearer {key}' -H 'Idempotency-Key: demo-1' \\
    -H 'Content-Type: application/json' -d '{{"user":"alice","amount":"5.00"}}'
  curl -s '{base}/user/balance?user=alice' -H 'Authorization: Bearer {key}'

With the OpenAI Python SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{key}")
  r = client.chat.completions.create(model="mock-gpt", user="alice",
                                     messages=[{{"role": "user", "content": "Hello!"}}])
  print(r.choices[0].message.content)

Logs: {stack.state_dir}/*.log    Stop: Ctrl-C
""", flush=True)


def run() -> int:
    state = Path(os.environ.get("TOLLGATE_STATE_DIR", ROOT / ".tollgate"))
    state.mkdir(parents=True, exist_ok=True)
    os.environ["TOLLGATE_PAYMENTS"] = payments_processor(dict(os.environ))
    stack = Stack(state_dir=state, ports=Ports.from_env(), secrets=Secrets.load_or_create(state / "secrets.env"))
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except (RuntimeError, OSError, KeyError) as e:
        print(f"failed to start: {e}", file=sys.stderr)
        return 1
    demo_env = state / "demo.env"
    demo_env.write_text(f"TOLLGATE_BASE_URL={stack.base_url}\nTOLLGATE_API_KEY={stack.secrets.demo_key}\n"
                        f"TOLLGATE_SHARED_API_KEY={stack.secrets.shared_key}\n")
    print_instructions(stack, demo_env)
    try:
        while not stopping:
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping. Last log lines:\n{stack.log_tail(name)}",
                          file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    finally:
        print("Stopping Tollgate…", flush=True)
        stack.stop()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        sys.exit(run())
    print(__doc__, file=sys.stderr)
    sys.exit(2)
