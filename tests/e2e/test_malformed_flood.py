"""1,000 generated bad requests through real Envoy: each answered 4xx in
OpenAI's error shape, none reaching the provider, the ledger unchanged, and
no wasm VM failing or reloading on the way."""

from __future__ import annotations

import collections
import http.client
import json
import random
import select
import socket
import urllib.request

from helpers import Reply, call, deposit, mock_requests

SEED = 20261128
TOTAL = 1000


def wasm_stats(stack) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.admin}/stats?filter=^wasm\\.").read().decode()
    return {k: int(v) for k, v in (line.split(": ", 1) for line in text.splitlines() if ": " in line)}


def raw_call(port: int, method: str, path: str, headers: list[tuple[str, bytes]], body: bytes) -> Reply:
    """Like helpers.call, but header values are raw bytes (not always UTF-8)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def call_reading_early(port: int, method: str, path: str, headers: list[tuple[str, bytes]], body: bytes,
                       chunked: bool) -> Reply:
    """Sends a large body while watching for an early answer, as curl does: the
    filter refuses an oversized request before its body has arrived, and Envoy
    then closes the connection, so a client that only reads after sending all
    of it sees a reset instead of the 413."""
    if chunked:
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                           for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        payload, framing = body, b"Content-Length: %d\r\n" % len(body)
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method.encode(), path.encode())
    head += b"".join(k.encode() + b": " + v + b"\r\n" for k, v in headers) + framing + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        sock.sendall(head)
        sock.setblocking(False)
        sent, got = 0, b""
        while True:
            writing = [sock] if sent < len(payload) else []
            readable, writable, _ = select.select([sock], writing, [], 15)
            if not readable and not writable:
                raise TimeoutError("no answer")
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    break
                got += data
                head_end = got.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = [int(line.split(b":", 1)[1]) for line in got[:head_end].split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(got) - head_end - 4 >= length[0]:
                        break
            elif writable:
                try:
                    sent += sock.send(payload[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(payload)
    finally:
        sock.close()
    head_end = got.find(b"\r\n\r\n")
    lines = got[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    hdrs = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return Reply(status, hdrs, got[head_end + 4:])


def valid_body(rng: random.Random) -> dict:
    return {"model": "mock-gpt", "user": f"flood-{rng.randrange(50)}",
            "messages": [{"role": "user", "content": "hello " * rng.randrange(1, 20)}]}


def generate(rng: random.Random, key: str, max_body: int) -> list[tuple[str, dict]]:
    """(category, request) pairs; a request is method, path, headers, body, chunked."""
    auth = [("Authorization", f"Bearer {key}".encode()), ("Content-Type", b"application/json")]

    def req(method="POST", path="/v1/chat/completions", headers=None, body=b"", chunked=False):
        return {"method": method, "path": path, "headers": auth if headers is None else headers,
                "body": body, "chunked": chunked}

    def bad_json():
        text = json.dumps(valid_body(rng)).encode()
        kind = rng.randrange(6)
        if kind == 0:
            return text[:rng.randrange(1, len(text) - 1)]               # truncated
        if kind == 1:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))  # noise
        if kind == 2:
            at = rng.randrange(len(text))
            return text[:at] + b"\xff\xfe\xc3" + text[at:]              # invalid UTF-8
        if kind == 3:
            body = valid_body(rng)
            invalid = {  # values OpenAI's API refuses for each field
                "model": [7, "", [], {}, True, None], "messages": [None, {}, 7, "hi"],
                "stream": [7, "x", [], {}], "max_tokens": [-1, "x", 1e300, [], True, 2**40],
                "n": [0, -1, 1000, "x", True], "user": [5, [], {}, True], "tools": [7, "x", {}, True],
            }
            field = rng.choice(sorted(invalid))
            body[field] = rng.choice(invalid[field])
            return json.dumps(body).encode()
        if kind == 4:
            return rng.choice([b"", b"null", b"[]", b"{}", b"\"text\"", b"{\"messages\": []}", b"{" * 3])
        body = valid_body(rng)
        body["messages"] = rng.choice([[], "hi", [1, 2], [{"role": "user"}], [{"content": "x"}]])
        return json.dumps(body).encode()

    def nested():
        depth = rng.choice([129, 500, 5_000, 50_000, 200_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + "1" + closer * depth
        body = f'{{"model": "mock-gpt", "user": "u", "messages": {inner}}}'
        return req(body=body.encode())

    def huge():
        size = max_body + rng.choice([1, 1000, 3 * max_body])
        content = "x" * size
        body = json.dumps({"model": "mock-gpt", "user": "u", "messages": [{"role": "user", "content": content}]})
        return req(body=body.encode(), chunked=rng.random() < 0.5)

    def bad_method():
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FROB"])
        body = json.dumps(valid_body(rng)).encode() if method in ("PUT", "PATCH", "FROB") else b""
        return req(method=method, body=body)

    def bad_user():
        body = valid_body(rng)
        kind = rng.randrange(6)
        headers = list(auth)
        path = "/v1/chat/completions"
        if kind == 0:
            del body["user"]                                            # none at all
        elif kind == 1:
            headers.append(("X-Paywall-User", b"someone-else"))         # header disagrees
        elif kind == 2:
            path = "/v1/mallory/chat/completions"                        # path disagrees
        elif kind == 3:
            body["user"] = "u" * rng.choice([257, 5000])                 # too long
        elif kind == 4:
            body["user"] = rng.choice(["a\nb", "\u0000", "\u007f", " "])  # unprintable or blank
        else:
            del body["user"]
            headers.append(("X-Paywall-User", b"al\xffce"))              # not UTF-8
        return req(path=path, headers=headers, body=json.dumps(body).encode())

    def bad_key():
        body = json.dumps(valid_body(rng)).encode()
        ct = ("Content-Type", b"application/json")
        value = rng.choice([None, b"", b"Bearer", b"Bearer ", b"Basic dXNlcjpwYXNz", b"Token abc",
                            b"Bearer tg_wrong_" + str(rng.randrange(10**9)).encode(),
                            b"Bearer " + key[:-1].encode(), b"Bearer \xff\xfe\xfd", key.encode()])
        headers = [ct] if value is None else [ct, ("Authorization", value)]
        if rng.random() < 0.3:  # plus spoofed internal headers: they change nothing
            headers += [("x-tollgate-route", b"mock"), ("x-tollgate-internal-secret", b"guess-" * 4)]
        return req(headers=headers, body=body)

    makers = [("bad_json", lambda: req(body=bad_json()), 330), ("nested", nested, 120),
              ("huge", huge, 60), ("bad_method", bad_method, 120), ("bad_user", bad_user, 190),
              ("bad_key", bad_key, 180)]
    assert sum(n for *_, n in makers) == TOTAL
    out = [(name, make()) for name, make, n in makers for _ in range(n)]
    rng.shuffle(out)
    return out


def send(stack, r: dict) -> Reply:
    if len(r["body"]) > 256 * 1024:
        return call_reading_early(stack.ports.public, r["method"], r["path"], r["headers"], r["body"], r["chunked"])
    if r["chunked"] or all(isinstance(v, str) for _, v in r["headers"]):
        headers = {k: v.decode("latin-1") for k, v in r["headers"]}
        return call(stack.ports.public, r["method"], r["path"], headers, r["body"] or None, chunked=r["chunked"])
    return raw_call(stack.ports.public, r["method"], r["path"], r["headers"], r["body"])


def test_a_thousand_malformed_requests(stack, ledger, capsys):
    rng = random.Random(SEED)
    requests = generate(rng, stack.secrets.demo_key, stack.max_body_bytes)
    # The users the requests name have money: a bad request that slipped
    # through would be held, forwarded and charged, not just topped up.
    auth = {"Authorization": f"Bearer {stack.secrets.demo_key}", "Content-Type": "application/json"}
    for i in range(50):
        assert deposit(stack, auth, f"flood-{i}", "5.00").status == 200
    mock_before, ledger_before, wasm_before = mock_requests(stack), ledger.snapshot(), wasm_stats(stack)
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for category, r in requests:
        reply = send(stack, r)
        statuses[category][reply.status] += 1
        try:
            assert 400 <= reply.status < 500, f"status {reply.status}"
            err = reply.error()
            assert err["type"], err
            assert reply.headers.get("x-request-id"), "no x-request-id"
        except (AssertionError, ValueError) as e:
            failures.append(f"{category} {r['method']} {r['path']} {r['body'][:80]!r}: {e}: {reply.body[:200]!r}")

    mock_after, ledger_after, wasm_after = mock_requests(stack), ledger.snapshot(), wasm_stats(stack)
    vm_keys = [k for k in wasm_after if "vm_reload" in k or k.endswith(".created") or k.endswith(".active")
               or k == "wasm.wasm_vm_count"]
    with capsys.disabled():  # the counts belong in the test output
        print(f"\n{len(requests)} malformed requests (seed {SEED}):")
        for category, counter in sorted(statuses.items()):
            print(f"  {category:<10} {sum(counter.values()):>4}  " + ", ".join(f"{s}×{n}" for s, n in sorted(counter.items())))
        print(f"  reached the provider: {mock_after - mock_before}; ledger rows before/after: {ledger_before} / {ledger_after}")
        print("  wasm: " + ", ".join(f"{k}={wasm_after[k]}" for k in sorted(vm_keys)))

    assert not failures, f"{len(failures)} bad answers, e.g.:\n" + "\n".join(failures[:15])
    assert mock_after == mock_before, "malformed requests reached the provider"
    assert ledger_after == ledger_before, "the ledger changed"
    for k in vm_keys:
        assert wasm_after[k] == wasm_before[k], f"{k}: {wasm_before[k]} -> {wasm_after[k]} (a VM failed)"
    assert "Function: proxy_on" not in stack.log_tail("envoy", 2000), "Envoy logged a wasm failure"
