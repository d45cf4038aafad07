"""A local fake of the Stripe endpoints the ledger calls, as strict as Stripe
about what it accepts, for tests (and for trying `make run` with
STRIPE_API_BASE pointing here).

Served:
  POST /v1/checkout/sessions          create (form-encoded, Idempotency-Key honoured)
  GET  /v1/checkout/sessions/{id}     retrieve
  GET  /v1/checkout/sessions          list (created[gte], status, payment_intent, limit, starting_after, …)
  GET  /c/pay/{id}, POST /c/pay/{id}  the hosted checkout page: paying completes the
                                      session, sends the signed webhook, redirects to success_url

Strictness: the secret key as a Bearer token; form encoding; every parameter
checked against the parameter types of the official `stripe` Python package
(generated from Stripe's OpenAPI description): an unknown name is refused
("Received unknown parameter"), an integer must be an integer, a literal one
of its values, a nested object of its own type; plus the rules Stripe checks
on the server (a payment needs line items with a currency, an integer
unit_amount, a product name and a quantity; a success_url; metadata limits;
a minimum charge). Errors come back in Stripe's shape and status codes. An
Idempotency-Key replays the first answer, or is refused when reused with
other parameters.

Test controls (not Stripe's) under /_fake/: complete a session (paid now, or
a delayed payment), settle a delayed payment, refund, resend an event, with
or without delivering the webhook (a lost webhook). Events are signed as
Stripe signs them: `Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`.

Usage: stripe_fake.py --port P --secret-key sk_test_… --webhook-secret whsec_… --webhook-url URL
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import types
import typing
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import typing_extensions
from stripe.params.checkout import SessionCreateParams, SessionListParams

# Keys of the client's request options, not parameters on the wire.
REQUEST_OPTIONS = {"api_key", "stripe_version", "stripe_account", "stripe_context", "max_network_retries",
                   "idempotency_key", "content_type", "headers"}
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
                "xaf", "xof", "xpf"}
# Stripe's minimum charge, in minor units, for the currencies the tests use.
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "jpy": 50}


class StripeError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code

    def body(self) -> dict:
        err = {"type": self.kind, "message": str(self)}
        if self.param:
            err["param"] = self.param
        if self.code:
            err["code"] = self.code
        return {"error": err}


# --- Parameters, checked against the official client's types -----------------

class _Names(dict):
    def __missing__(self, key):
        return typing.Any


def _resolve(t, module):
    if isinstance(t, typing.ForwardRef):
        t = t.__forward_arg__
    if isinstance(t, str):
        t = eval(t, {}, _Names({**vars(builtins), **vars(typing), **vars(module)}))  # noqa: S307 (the package's own annotations)
    return t


def _check(value, t, path: str, module) -> None:
    t = _resolve(t, module)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.NotRequired, typing.Required):
        return _check(value, args[0], path, module)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in args:
            try:
                return _check(value, alt, path, module)
            except StripeError as e:
                errors.append(e)
        raise errors[-1]
    if origin is typing.Literal:
        if value not in args:
            raise StripeError(400, f"Invalid {path}: must be one of {', '.join(map(str, args))}", param=path)
        return
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise StripeError(400, f"Invalid array: {path}", param=path)
        for i, item in enumerate(value):
            _check(item, args[0], f"{path}[{i}]", module)
        return
    if origin in (dict, typing.Dict) or t is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise StripeError(400, f"Invalid object: {path}", param=path)
        return
    if typing_extensions.is_typeddict(t):
        if not isinstance(value, dict):
            raise StripeError(400, f"Invalid object: {path}", param=path)
        known = t.__annotations__
        for key, item in value.items():
            name = f"{path}[{key}]" if path else key
            if key not in known or (not path and key in REQUEST_OPTIONS):
                raise StripeError(400, f"Received unknown parameter: {name}", param=name)
            _check(item, known[key], name, module)
        for key in t.__required_keys__:
            if key not in value:
                name = f"{path}[{key}]" if path else key
                raise StripeError(400, f"Missing required param: {name}.", param=name, code="parameter_missing")
        return
    if t is int:
        if not (isinstance(value, str) and value.lstrip("-").isdigit()):
            raise StripeError(400, f"Invalid integer: {value}", param=path)
        return
    if t is bool:
        if value not in ("true", "false"):
            raise StripeError(400, f"Invalid boolean: {value}", param=path)
        return
    if t is str:
        if not isinstance(value, str):
            raise StripeError(400, f"Invalid string: {path}", param=path)
        return
    # Any, or a type this fake does not know: accepted as Stripe would a string.


def parse_form(pairs: list[tuple[str, str]]) -> dict:
    """`a[b][0][c]=v` pairs into nested dicts and lists, as Stripe reads them."""
    root: dict = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + ([p for p in rest.rstrip("]").split("][")] if rest else [])
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StripeError(400, f"Invalid parameter: {key}", param=key)
        if isinstance(node.get(parts[-1]), dict):
            raise StripeError(400, f"Invalid parameter: {key}", param=key)
        node[parts[-1]] = value

    def lists(node):
        if not isinstance(node, dict):
            return node
        node = {k: lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            indexes = sorted(int(k) for k in node)
            if indexes != list(range(len(indexes))):
                raise StripeError(400, "Invalid array indexes")
            return [node[str(i)] for i in indexes]
        return node
    return lists(root)


def check_create(params: dict) -> None:
    _check(params, SessionCreateParams, "", sys.modules[SessionCreateParams.__module__])
    mode = params.get("mode")
    if mode is None:
        raise StripeError(400, "Missing required param: mode.", param="mode", code="parameter_missing")
    if mode != "payment":
        raise StripeError(400, "This fake serves mode=payment only.", param="mode")
    if params.get("ui_mode", "hosted") == "hosted" and "success_url" not in params:
        raise StripeError(400, "Missing required param: success_url.", param="success_url",
                          code="parameter_missing")
    items = params.get("line_items") or []
    if not items:
        raise StripeError(400, "Missing required param: line_items.", param="line_items", code="parameter_missing")
    currencies = set()
    for i, item in enumerate(items):
        p = f"line_items[{i}]"
        data = item.get("price_data")
        if data is None:
            raise StripeError(400, f"This fake needs {p}[price_data] (no Prices are stored).", param=p)
        if "quantity" not in item:
            raise StripeError(400, f"Missing required param: {p}[quantity].", param=f"{p}[quantity]",
                              code="parameter_missing")
        if "unit_amount" not in data:
            raise StripeError(400, f"Missing required param: {p}[price_data][unit_amount].",
                              param=f"{p}[price_data][unit_amount]", code="parameter_missing")
        if "product_data" not in data or not data["product_data"].get("name"):
            raise StripeError(400, f"Missing required param: {p}[price_data][product_data][name].",
                              param=f"{p}[price_data][product_data][name]", code="parameter_missing")
        currency = data["currency"]
        if len(currency) != 3 or not currency.isalpha() or not currency.islower():
            raise StripeError(400, f"Invalid currency: {currency}.", param=f"{p}[price_data][currency]")
        currencies.add(currency)
        if int(item["quantity"]) < 1 or int(data["unit_amount"]) < 0:
            raise StripeError(400, f"Invalid {p}: amounts and quantities must be positive.", param=p)
    if len(currencies) > 1:
        raise StripeError(400, "All line items must share a currency.", param="line_items")
    for scope, meta in (("metadata", params.get("metadata") or {}),
                        ("payment_intent_data[metadata]", (params.get("payment_intent_data") or {}).get("metadata") or {})):
        if len(meta) > 50 or any(len(k) > 40 or len(v) > 500 for k, v in meta.items()):
            raise StripeError(400, f"Invalid {scope}: at most 50 keys, keys up to 40 and values up to 500 characters.",
                              param=scope)
    if len(params.get("client_reference_id", "")) > 200:
        raise StripeError(400, "Invalid client_reference_id: up to 200 characters.", param="client_reference_id")
    total = sum(int(i["price_data"]["unit_amount"]) * int(i["quantity"]) for i in items)
    currency = currencies.pop()
    if total < MINIMUM_CHARGE.get(currency, 50):
        raise StripeError(400, "The Checkout Session's total amount due must add up to at least the minimum charge.",
                          code="amount_too_small")


def check_list(query: dict) -> None:
    _check(query, SessionListParams, "", sys.modules[SessionListParams.__module__])
    if query.get("status", "open") not in ("open", "complete", "expired"):
        raise StripeError(400, f"Invalid status: must be one of open, complete, expired", param="status")
    limit = int(query.get("limit", "10"))
    if not 1 <= limit <= 100:
        raise StripeError(400, "Invalid limit: must be between 1 and 100.", param="limit")


# --- State --------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_urlsafe(24).replace('-', 'a').replace('_', 'b')}"


@dataclass
class Fake:
    secret_key: str
    webhook_secret: str
    webhook_url: str = ""
    base_url: str = ""
    sessions: dict[str, dict] = field(default_factory=dict)
    charges: dict[str, dict] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, int, dict]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # The API.
    def create_session(self, params: dict) -> dict:
        check_create(params)
        item = params["line_items"][0]
        total = sum(int(i["price_data"]["unit_amount"]) * int(i["quantity"]) for i in params["line_items"])
        sid = new_id("cs")
        now = int(time.time())
        session = {
            "id": sid, "object": "checkout.session", "mode": "payment", "status": "open",
            "payment_status": "unpaid", "amount_subtotal": total, "amount_total": total,
            "currency": item["price_data"]["currency"], "payment_intent": None,
            "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata", {}),
            "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
            "url": f"{self.base_url}/c/pay/{sid}", "created": now, "expires_at": now + 86400,
            "livemode": False, "customer": None, "customer_details": None,
            "_payment_metadata": (params.get("payment_intent_data") or {}).get("metadata", {}),
        }
        self.sessions[sid] = session
        return session

    def list_sessions(self, query: dict) -> dict:
        check_list(query)
        found = sorted(self.sessions.values(), key=lambda s: (s["created"], s["id"]), reverse=True)
        created = query.get("created")
        if isinstance(created, dict):
            for op, test in (("gte", int.__ge__), ("gt", int.__gt__), ("lte", int.__le__), ("lt", int.__lt__)):
                if op in created:
                    found = [s for s in found if test(s["created"], int(created[op]))]
        for key in ("status", "payment_intent"):
            if key in query:
                found = [s for s in found if s[key] == query[key]]
        if "starting_after" in query:
            ids = [s["id"] for s in found]
            if query["starting_after"] not in ids:
                raise StripeError(404, f"No such checkout.session: '{query['starting_after']}'",
                                  code="resource_missing", param="starting_after")
            found = found[ids.index(query["starting_after"]) + 1:]
        limit = int(query.get("limit", "10"))
        return {"object": "list", "url": "/v1/checkout/sessions", "has_more": len(found) > limit,
                "data": [public(s) for s in found[:limit]]}

    # Test controls.
    def complete(self, sid: str, delayed: bool = False, deliver: bool = True) -> dict:
        s = self.sessions[sid]
        s["status"] = "complete"
        s["payment_intent"] = s["payment_intent"] or new_id("pi")
        s["payment_status"] = "unpaid" if delayed else "paid"
        if not delayed:
            self._charge(s)
        return self.emit("checkout.session.completed", public(s), deliver)

    def settle_delayed(self, sid: str, succeeded: bool, deliver: bool = True) -> dict:
        s = self.sessions[sid]
        if succeeded:
            s["payment_status"] = "paid"
            self._charge(s)
            return self.emit("checkout.session.async_payment_succeeded", public(s), deliver)
        return self.emit("checkout.session.async_payment_failed", public(s), deliver)

    def refund(self, sid: str, amount: int, deliver: bool = True) -> dict:
        charge = self.charges[self.sessions[sid]["payment_intent"]]
        if charge["amount_refunded"] + amount > charge["amount"]:
            raise StripeError(400, "Refund amount is greater than the unrefunded amount.")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return self.emit("charge.refunded", dict(charge), deliver)

    def _charge(self, s: dict) -> None:
        pi = s["payment_intent"]
        self.charges.setdefault(pi, {
            "id": new_id("ch"), "object": "charge", "amount": s["amount_total"], "amount_captured": s["amount_total"],
            "amount_refunded": 0, "currency": s["currency"], "payment_intent": pi, "paid": True,
            "refunded": False, "status": "succeeded", "metadata": s["_payment_metadata"], "livemode": False,
        })

    def emit(self, kind: str, obj: dict, deliver: bool) -> dict:
        event = {"id": new_id("evt"), "object": "event", "api_version": "2024-06-20", "created": int(time.time()),
                 "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
                 "request": {"id": None, "idempotency_key": None}, "type": kind}
        self.events[event["id"]] = event
        if deliver:
            self.deliver(event["id"])
        return event

    def deliver(self, event_id: str, timestamp: int | None = None, secret: str | None = None) -> int:
        """POSTs the event, signed as Stripe signs; returns the endpoint's status."""
        body = json.dumps(self.events[event_id], indent=2).encode()
        header = sign(secret or self.webhook_secret, body, timestamp)
        req = urllib.request.Request(self.webhook_url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        self.deliveries.append({"event": event_id, "status": status})
        return status


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def public(s: dict) -> dict:
    return {k: v for k, v in s.items() if not k.startswith("_")}


# --- HTTP ---------------------------------------------------------------------

def handler_for(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def _send(self, status: int, body, content_type="application/json", headers=None):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Request-Id", "req_" + secrets.token_hex(8))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> None:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                raise StripeError(401, "You did not provide an API key. Provide it in the Authorization header "
                                       "as a Bearer token.")
            if not hmac.compare_digest(auth[7:].encode(), fake.secret_key.encode()):
                raise StripeError(401, "Invalid API Key provided.")

        def _record(self, body: bytes) -> None:
            fake.requests.append({"method": self.command, "path": self.path, "body": body.decode(errors="replace"),
                                  "headers": {k.lower(): v for k, v in self.headers.items()}})

        def _api(self, method: str) -> None:
            body = self._body()
            url = urllib.parse.urlsplit(self.path)
            with fake.lock:
                self._record(body)
                try:
                    self._authorized()
                    if method == "POST" and url.path == "/v1/checkout/sessions":
                        status, answer = self._create(body)
                    elif method == "GET" and url.path == "/v1/checkout/sessions":
                        query = parse_form(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                        status, answer = 200, fake.list_sessions(query)
                    elif method == "GET" and url.path.startswith("/v1/checkout/sessions/"):
                        sid = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
                        if sid not in fake.sessions:
                            raise StripeError(404, f"No such checkout.session: '{sid}'", code="resource_missing",
                                              param="session")
                        status, answer = 200, public(fake.sessions[sid])
                    else:
                        raise StripeError(404, f"Unrecognized request URL ({method}: {url.path}).")
                except StripeError as e:
                    status, answer = e.status, e.body()
            self._send(status, answer)

        def _create(self, body: bytes) -> tuple[int, dict]:
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                raise StripeError(400, "Invalid request: the body must be application/x-www-form-urlencoded.")
            params = parse_form(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body)))
            key = self.headers.get("Idempotency-Key")
            if key is not None:
                if not 1 <= len(key) <= 255:
                    raise StripeError(400, "Idempotency keys are 1 to 255 characters.")
                if key in fake.idempotency:
                    first_body, status, answer = fake.idempotency[key]
                    if first_body != body.decode():
                        raise StripeError(400, "Keys for idempotent requests can only be used with the same "
                                               "parameters they were first used with.", kind="idempotency_error")
                    return status, answer
            try:
                status, answer = 200, public(fake.create_session(params))
            except StripeError as e:
                status, answer = e.status, e.body()
            if key is not None:
                fake.idempotency[key] = (body.decode(), status, answer)
            if status != 200:
                raise StripeError(status, answer["error"]["message"], answer["error"]["type"],
                                  answer["error"].get("param"), answer["error"].get("code"))
            return status, answer

        def _hosted_page(self, method: str, sid: str) -> None:
            s = fake.sessions.get(sid)
            if s is None:
                return self._send(404, b"No such session", "text/plain")
            if method == "GET":
                page = (f"<!doctype html><title>Fake Stripe Checkout</title><h1>Pay {s['amount_total']} "
                        f"{s['currency'].upper()} (minor units)</h1><form method=post><button>Pay</button></form>"
                        f"<a href=\"{s['cancel_url']}\">Back</a>").encode()
                return self._send(200, page, "text/html")
            self._body()
            if s["status"] != "open":
                return self._send(409, b"This session is no longer open", "text/plain")
            with fake.lock:
                fake.complete(sid)
            target = s["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)
            self._send(303, b"", "text/plain", {"Location": target})

        def _control(self) -> None:
            body = json.loads(self._body() or b"{}")
            parts = self.path.strip("/").split("/")  # _fake, kind, id, action
            try:
                with fake.lock:
                    if parts[1] == "sessions" and parts[3] == "complete":
                        answer = fake.complete(parts[2], body.get("delayed", False), body.get("deliver", True))
                    elif parts[1] == "sessions" and parts[3] == "settle":
                        answer = fake.settle_delayed(parts[2], body["succeeded"], body.get("deliver", True))
                    elif parts[1] == "sessions" and parts[3] == "refund":
                        answer = fake.refund(parts[2], int(body["amount"]), body.get("deliver", True))
                    elif parts[1] == "events" and parts[3] == "resend":
                        answer = {"status": fake.deliver(parts[2], body.get("timestamp"), body.get("secret"))}
                    else:
                        raise StripeError(404, "unknown control")
            except StripeError as e:
                return self._send(e.status, e.body())
            self._send(200, answer)

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/c/pay/"):
                return self._hosted_page("GET", self.path.split("/")[3])
            if self.path == "/_fake/state":
                with fake.lock:
                    return self._send(200, {"requests": fake.requests, "deliveries": fake.deliveries})
            self._api("GET")

        def do_POST(self):  # noqa: N802
            if self.path.startswith("/c/pay/"):
                return self._hosted_page("POST", self.path.split("/")[3])
            if self.path.startswith("/_fake/"):
                return self._control()
            self._api("POST")

    return Handler


def serve(fake: Fake, port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=12111)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--webhook-secret", required=True)
    ap.add_argument("--webhook-url", required=True)
    a = ap.parse_args()
    fake = Fake(a.secret_key, a.webhook_secret, a.webhook_url)
    server = serve(fake, a.port)
    print(f"Stripe fake on {fake.base_url}; events go to {a.webhook_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
