#!/usr/bin/env python3
"""`make bench`: Tollgate's overhead against plain Envoy, side by side in one
run against the same mock provider, with `oha` as the load generator.

1. Two stacks from the same Envoy configuration (envoy/envoy.yaml rendered by
   scripts/envoy_config.py): Tollgate (Envoy + filter + sidecar on SQLite)
   and the baseline (the same Envoy without the filter, routing straight to
   the provider: same listener, access log, local replies and log level).
2. Rounds interleave (baseline, Tollgate, baseline, Tollgate …; BENCH_ROUNDS,
   at least 3) and the report gives medians: peak requests/s at fixed
   concurrency, latency at fixed rates (200 and 1,000 req/s), streaming
   first byte and inter-event gaps, CPU per 1,000 completed requests.
3. The ledger in-process (cargo bench ledger_ops: empty and with 1 million
   transfers) and token counting, wasm against native.
4. Writes BENCHMARKS.md and bench/results.json (each figure: name, value, unit).
Every charged request is a real hold + settlement in the ledger.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stack import ROOT, Ports, Stack  # noqa: E402

TOOLS = ROOT / ".tollgate" / "tools"
OHA = TOOLS / "bin" / "oha"
OHA_VERSION = "1.16.0"
DURATION = os.environ.get("BENCH_DURATION", "10s")
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "200,1000").split(",")]
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
ROUNDS = max(3, int(os.environ.get("BENCH_ROUNDS", "3")))
BODY = json.dumps({"model": "mock-gpt", "user": "bench-user",
                   "messages": [{"role": "user", "content": "Say hello to the benchmark."}]})
RESULTS = ROOT / "bench" / "results.json"


def sh(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, cwd=ROOT, **kw)


def ensure_tools() -> None:
    if not OHA.exists():
        print("installing oha (load generator) into .tollgate/tools …", flush=True)
        sh("cargo", "install", "oha", "--version", OHA_VERSION, "--locked", "--root", str(TOOLS))
    sh("cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "tollgate-filter")
    sh("cargo", "build", "--release", "-p", "tollgate-ledger", "-p", "tollgate-mock-provider")


def oha(url: str, key: str, rate: int | None) -> dict:
    argv = [str(OHA), "-z", DURATION, "-c", str(CONCURRENCY), "--no-tui", "--output-format", "json",
            "-m", "POST", "-T", "application/json", "-H", f"Authorization: Bearer {key}", "-d", BODY, url]
    if rate:
        argv[1:1] = ["-q", str(rate)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    statuses = doc.get("statusCodeDistribution", {})
    return {
        "rps": doc["summary"]["requestsPerSec"],
        "p50_ms": doc["latencyPercentiles"]["p50"] * 1000,
        "p99_ms": doc["latencyPercentiles"]["p99"] * 1000,
        "ok": statuses.get("200", 0),
        "completed": sum(statuses.values()),
        "other": {k: v for k, v in statuses.items() if k != "200"},
    }


STREAMS = int(os.environ.get("BENCH_STREAMS", "10"))
CHUNK_DELAY_MS = 20
# Long enough for the mock to answer in about 64 chunks (one per token).
STREAM_PROMPT = " ".join(["word"] * 52)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def stream_timings(stack: Stack, key: str) -> dict:
    """Time to first byte and the gaps between SSE events, over STREAMS streams
    of ~64 chunks the mock sends CHUNK_DELAY_MS apart. The end (the usage event
    and `[DONE]`, which the filter holds back until the charge is committed) is
    timed apart: from the last content event to `[DONE]`."""
    # With usage asked for, both sides send the client the same events (the filter
    # would otherwise cut the usage event it asks for, merging two gaps into one).
    body = json.dumps({"model": "mock-gpt", "user": "bench-user", "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": STREAM_PROMPT}]})
    ttfb, gaps, ends, events_per_stream = [], [], [], []
    for _ in range(STREAMS):
        conn = http.client.HTTPConnection("127.0.0.1", stack.ports.public, timeout=30)
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
            "x-mock-chunk-delay-ms": str(CHUNK_DELAY_MS)})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        buf, last, first, count, stream_gaps = b"", None, None, 0, []
        while True:
            data = resp.read1(65536)
            if not data:
                break
            now = time.perf_counter()
            if first is None:
                first = now
                ttfb.append((now - started) * 1000)
            buf += data
            while b"\n\n" in buf:
                _, buf = buf.split(b"\n\n", 1)
                count += 1
                if last is not None:
                    stream_gaps.append((now - last) * 1000)
                last = now
        gaps.extend(stream_gaps[:-2])
        ends.append(sum(stream_gaps[-2:]))
        events_per_stream.append(count)
        conn.close()
    return {"ttfb_p50": percentile(ttfb, 50), "ttfb_p99": percentile(ttfb, 99),
            "gap_p50": percentile(gaps, 50), "gap_p99": percentile(gaps, 99),
            "end_p50": percentile(ends, 50), "end_p99": percentile(ends, 99),
            "events": sum(events_per_stream) / len(events_per_stream)}


def envoy_memory(stack: Stack) -> int:
    """Envoy's resident memory in bytes (VmRSS) after start-up: it includes the
    wasm VMs' linear memories, which V8 maps outside Envoy's allocator."""
    for line in Path(f"/proc/{stack.procs['envoy'].pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def settled_memory(stack: Stack) -> int:
    """Envoy's resident memory once it stops growing: each worker configures
    its VM (and builds its encoding) after Envoy reports ready."""
    last = envoy_memory(stack)
    for _ in range(20):
        time.sleep(0.5)
        now = envoy_memory(stack)
        if abs(now - last) < 2**18:
            return now
        last = now
    return last


def wasm_vms(stack: Stack) -> int:
    """Live wasm VMs in Envoy (the base VM, the main thread's and one per worker)."""
    url = f"http://127.0.0.1:{stack.ports.admin}/stats?filter=wasm.envoy.wasm.runtime.v8.active"
    with urllib.request.urlopen(url, timeout=5) as r:
        line = r.read().decode().strip().splitlines()[0]
    return int(line.rsplit(":", 1)[1])


def memory_by_workers(tmp: Path, baseline_memory: int) -> dict:
    """What each wasm VM costs Envoy, apart from what the module costs once.
    The same Tollgate stack is started with 1 and with 4 workers: the resident
    memory that 3 more VMs add, divided by 3, is the cost of one VM (its
    instance: linear memory, V8 store); what remains above the baseline Envoy
    at 1 worker is paid once per Envoy (V8 itself, the compiled module, the
    base VM)."""
    seen = {}
    for workers in (1, 4):
        stack = Stack(state_dir=tmp / f"workers-{workers}", ports=Ports.free(), profile="release",
                      concurrency=workers)
        try:
            stack.start()
            seen[workers] = (settled_memory(stack), wasm_vms(stack))
        finally:
            stack.stop()
    (rss1, vms1), (rss4, vms4) = seen[1], seen[4]
    per_vm = (rss4 - rss1) / (vms4 - vms1)
    return {"per_vm": per_vm, "once": rss1 - baseline_memory - vms1 * per_vm, "vms": (vms1, vms4)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(stack: Stack, key: str, rate: int | None) -> dict:
    """One oha run, with the CPU each process of the stack burnt per 1,000
    requests completed in it."""
    before = {name: cpu_seconds(p.pid) for name, p in stack.procs.items()}
    run = oha(f"{stack.base_url}/chat/completions", key, rate)
    run["cpu_ms_per_1k"] = {name: (cpu_seconds(p.pid) - before[name]) * 1e6 / max(run["completed"], 1)
                            for name, p in stack.procs.items()}
    return run


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (CPU per process too)."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
    # Kept per round too: a p99 moves between rounds, and a change must stand out from that.
    out["p99_rounds"] = [r["p99_ms"] for r in runs]
    out["ok"] = sum(r["ok"] for r in runs)
    out["other"] = {}
    for r in runs:
        for status, n in r["other"].items():
            out["other"][status] = out["other"].get(status, 0) + n
    out["cpu_ms_per_1k"] = {name: statistics.median(r["cpu_ms_per_1k"][name] for r in runs)
                            for name in runs[0]["cpu_ms_per_1k"]}
    return out


def median_streams(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def fund(stack: Stack) -> None:
    funded = subprocess.run(
        ["curl", "-sf", f"{stack.base_url}/user/balance/deposit",
         "-H", f"Authorization: Bearer {stack.secrets.demo_key}", "-H", "Content-Type: application/json",
         "-d", json.dumps({"user": "bench-user", "amount": "1000000.00"})],
        capture_output=True, text=True)
    if funded.returncode != 0:
        raise RuntimeError("could not fund the bench user")


def main() -> int:
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        tmp = Path(tmp)
        tollgate = Stack(state_dir=tmp / "tollgate", ports=Ports.free(), profile="release")
        baseline = Stack(state_dir=tmp / "baseline", ports=Ports.free(), profile="release", baseline=True)
        baseline.state_dir.mkdir(parents=True)
        sides = {"baseline": (baseline, "ignored-by-baseline"), "tollgate": (tollgate, tollgate.secrets.demo_key)}
        runs: dict = {side: {"peak": [], **{r: [] for r in RATES}, "streams": []} for side in sides}
        try:
            tollgate.start()
            baseline.start()
            memory = {side: settled_memory(stack) for side, (stack, _) in sides.items()}
            vms = wasm_vms(tollgate)
            fund(tollgate)
            for n in range(1, ROUNDS + 1):
                for kind in ["peak", *RATES, "streams"]:
                    for side, (stack, key) in sides.items():
                        print(f"round {n}/{ROUNDS}: {side} {kind} …", flush=True)
                        if kind == "streams":
                            runs[side]["streams"].append(stream_timings(stack, key))
                        else:
                            runs[side][kind].append(load(stack, key, None if kind == "peak" else kind))
        finally:
            tollgate.stop()  # waits for queued settlements first
            baseline.stop()
        print("measuring memory per wasm VM (1 and 4 Envoy workers) …", flush=True)
        by_workers = memory_by_workers(tmp, memory["baseline"])
        with sqlite3.connect(tollgate.state_dir / "ledger.db") as db:
            charges = db.execute("SELECT COUNT(*) FROM charges").fetchone()[0]

    print("measuring the ledger (SQLite and PostgreSQL, empty and with 1M transfers) …", flush=True)
    figures_file = ROOT / "target" / "ledger-bench.json"
    ledger = subprocess.run(["cargo", "bench", "-p", "tollgate-ledger", "--bench", "ledger_ops"], cwd=ROOT,
                            check=True, capture_output=True, text=True,
                            env={**os.environ, "LEDGER_BENCH_JSON": str(figures_file)}).stdout
    ledger_figures = json.loads(figures_file.read_text())
    print("measuring token counting, wasm against native …", flush=True)
    tokens = subprocess.run(["cargo", "bench", "-p", "tollgate-wasm-test-harness", "--bench", "wasm_vs_native"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result = {side: {"peak": median_of(r["peak"]), **{rate: median_of(r[rate]) for rate in RATES},
                     "streams": median_streams(r["streams"]), "memory": memory[side]}
              for side, r in runs.items()}
    result["tollgate"]["vms"] = vms
    result["tollgate"]["by_workers"] = by_workers
    answered = sum(run["ok"] for kind in ["peak", *RATES] for run in runs["tollgate"][kind])
    write_results(result, ledger_figures)
    write_report(result, answered, charges, ledger, tokens)
    return 0


def wasm_size() -> int:
    return (ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate_filter.wasm").stat().st_size


def write_results(r: dict, ledger_figures: list[dict]) -> None:
    tg, base = r["tollgate"], r["baseline"]
    figures = [
        ("peak_rps_baseline", base["peak"]["rps"], "req/s"),
        ("peak_rps_tollgate", tg["peak"]["rps"], "req/s"),
        ("peak_ratio", tg["peak"]["rps"] / base["peak"]["rps"] if base["peak"]["rps"] else 0, "ratio"),
    ]
    for rate in RATES:
        figures += [
            (f"achieved_rps_at_{rate}_tollgate", tg[rate]["rps"], "req/s"),
            (f"added_p50_at_{rate}", tg[rate]["p50_ms"] - base[rate]["p50_ms"], "ms"),
            (f"added_p99_at_{rate}", tg[rate]["p99_ms"] - base[rate]["p99_ms"], "ms"),
        ]
    figures += [
        ("added_stream_first_byte_p50", tg["streams"]["ttfb_p50"] - base["streams"]["ttfb_p50"], "ms"),
        ("added_stream_gap_p99", tg["streams"]["gap_p99"] - base["streams"]["gap_p99"], "ms"),
        ("added_stream_end_p50", tg["streams"]["end_p50"] - base["streams"]["end_p50"], "ms"),
        ("envoy_memory_per_wasm_vm", (tg["memory"] - base["memory"]) / 2**20 / tg["vms"], "MiB"),
        ("envoy_memory_per_added_wasm_vm", tg["by_workers"]["per_vm"] / 2**20, "MiB"),
        ("envoy_memory_once_per_envoy", tg["by_workers"]["once"] / 2**20, "MiB"),
        ("wasm_module_size", wasm_size(), "bytes"),
    ]
    for side, run in (("baseline", base), ("tollgate", tg)):
        for proc, ms in run["peak"]["cpu_ms_per_1k"].items():
            figures.append((f"cpu_per_1k_at_peak_{side}_{proc}", ms, "ms"))
    rows = [{"name": n, "value": round(v, 3), "unit": u} for n, v, u in figures] + ledger_figures
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


def write_report(r: dict, answered: int, charges: int, ledger: str, tokens: str) -> None:
    tg, base = r["tollgate"], r["baseline"]

    def cpu(run: dict) -> str:
        return ", ".join(f"{name} {ms:.0f}" for name, ms in run["cpu_ms_per_1k"].items())

    def rounds(run: dict) -> str:
        return " / ".join(f"{p99:.2f}" for p99 in run["p99_rounds"])

    def row(label: str, run: dict) -> str:
        return (f"| {label} | {run['rps']:.0f} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} | "
                f"{run['other'] or '-'} |")

    ratio = tg["peak"]["rps"] / base["peak"]["rps"] if base["peak"]["rps"] else 0
    rates = ""
    for rate in RATES:
        rates += f"""
## Latency at a fixed rate ({rate} requests/s)

| | achieved req/s | p50 ms | p99 ms | non-200 |
|---|---:|---:|---:|---|
{row("Baseline (Envoy without the filter)", base[rate])}
{row("Tollgate", tg[rate])}

Added by Tollgate at {rate} req/s: p50 **{tg[rate]['p50_ms'] - base[rate]['p50_ms']:+.2f} ms**,
p99 **{tg[rate]['p99_ms'] - base[rate]['p99_ms']:+.2f} ms**. CPU per 1,000 requests (ms): Tollgate
{cpu(tg[rate])}; baseline {cpu(base[rate])}.
p99 in each round (ms): Tollgate {rounds(tg[rate])}; baseline {rounds(base[rate])}.
"""
    s_tg, s_base = tg["streams"], base["streams"]
    today = datetime.date.today().isoformat()
    text = f"""# Benchmarks

Measured by `make bench` (scripts/bench.py) on {today}; the figures are also in
`bench/results.json`. Machine: {machine()}.
Load generator: oha {OHA_VERSION}; {DURATION} per run; non-streaming chat completions
against the same release-built mock provider; Envoy {envoy_version()} with `--concurrency 2`.
"Tollgate" = Envoy + the release `.wasm` + the ledger sidecar on SQLite: every request is
authorized (a hold) and settled (a charge, acknowledged before the response ends) for real.
"Baseline" = the same Envoy configuration without the filter, routing straight to the
provider (same listener, access log, local replies, log level). Both run side by side;
{ROUNDS} rounds interleave baseline and Tollgate for each figure, and the tables give
medians over the rounds. CPU per 1,000 requests divides by the requests completed.

## Throughput at fixed concurrency ({CONCURRENCY} connections)

| | requests/s | p50 ms | p99 ms | non-200 |
|---|---:|---:|---:|---|
{row("Baseline (Envoy without the filter)", base["peak"])}
{row("Tollgate", tg["peak"])}

Tollgate / baseline throughput: **{ratio:.3f}×**.

CPU per 1,000 requests at peak (ms): Tollgate run {cpu(tg["peak"])}; baseline run {cpu(base["peak"])}.
p99 in each round (ms): Tollgate {rounds(tg["peak"])}; baseline {rounds(base["peak"])}.
{rates}
Requests answered 200 by Tollgate in the runs above: {answered}; charges in the ledger after
the stack stopped: {charges} (they also include the streams below, and the requests the load
generator abandons when a run ends, charged as client aborts).

## Memory

Envoy's resident memory after start-up: {base['memory'] / 2**20:.1f} MiB without the filter,
{tg['memory'] / 2**20:.1f} MiB with it: **{(tg['memory'] - base['memory']) / 2**20 / tg['vms']:.1f} MiB per wasm VM**
({tg['vms']} VMs with `--concurrency 2`; each builds the default encoding at configure), counting
what Envoy pays once for the module in each VM's share. Apart: started with 1 and with 4 workers
({tg['by_workers']['vms'][0]} and {tg['by_workers']['vms'][1]} VMs), each further VM adds
**{tg['by_workers']['per_vm'] / 2**20:.1f} MiB**; what is paid once per Envoy (V8 itself, the
compiled module, the base VM) is {tg['by_workers']['once'] / 2**20:.1f} MiB. The release
`.wasm` is {wasm_size():,} bytes.

## Streaming transparency ({STREAMS} streams of ~{s_tg['events']:.0f} events per round, {CHUNK_DELAY_MS} ms apart at the mock)

| | first byte p50 ms | first byte p99 ms | inter-event gap p50 ms | gap p99 ms | last content event to `[DONE]` p50 ms |
|---|---:|---:|---:|---:|---:|
| Baseline (Envoy without the filter) | {s_base['ttfb_p50']:.2f} | {s_base['ttfb_p99']:.2f} | {s_base['gap_p50']:.2f} | {s_base['gap_p99']:.2f} | {s_base['end_p50']:.2f} |
| Tollgate | {s_tg['ttfb_p50']:.2f} | {s_tg['ttfb_p99']:.2f} | {s_tg['gap_p50']:.2f} | {s_tg['gap_p99']:.2f} | {s_tg['end_p50']:.2f} |

Added by Tollgate: first byte p50 **{s_tg['ttfb_p50'] - s_base['ttfb_p50']:+.2f} ms**
(the authorize callout), inter-event gap p50 **{s_tg['gap_p50'] - s_base['gap_p50']:+.2f} ms**,
p99 **{s_tg['gap_p99'] - s_base['gap_p99']:+.2f} ms** between content events (the streams ask for
usage, so both sides send the same events); the end, held until the charge is committed,
**{s_tg['end_p50'] - s_base['end_p50']:+.2f} ms** at p50 (the usage event waits for `[DONE]`,
which the mock sends {CHUNK_DELAY_MS} ms after it).

{tokens.strip()}

{ledger.strip()}

Reproduce: `make bench` (BENCH_DURATION, BENCH_RATES, BENCH_CONCURRENCY, BENCH_ROUNDS,
BENCH_STREAMS, LEDGER_BENCH_OPS override the defaults).
"""
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(text)


def envoy_version() -> str:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "envoy"), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else out.strip()


if __name__ == "__main__":
    sys.exit(main())
