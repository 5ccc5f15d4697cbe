"""The service's ASGI guard, before BentoML parses a request: JSON only (415), and
no body longer or holding more values than the largest valid request of its
route (413), with the bounds derived from the service's own routes and input
schemas. Pure: imports neither the model nor BentoML."""
from __future__ import annotations

import json

# A request body's bound, per route, from the most values a valid body of that route
# holds (its input schema): this many bytes a value (a float64 repr with its comma
# and space takes at most 26), plus room for keys and whitespace.
VALUE_BYTES = 32
BODY_SLACK = 4096


def max_values(schema: dict, defs: dict | None = None) -> int:
    """The most JSON values (numbers, strings) a body valid under this JSON schema holds;
    ValueError where an array has no maxItems (no bound can be derived)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return max_values(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return max(max_values(o, defs) for o in options)
    kind = schema.get("type")
    if kind == "object":
        return sum(max_values(s, defs) for s in schema.get("properties", {}).values())
    if kind == "array":
        if "maxItems" not in schema:
            raise ValueError(f"an array without maxItems: {schema}")
        return schema["maxItems"] * max_values(schema.get("items", {}), defs)
    return 1


def body_bounds(limits: dict[str, int]) -> dict[str, int]:
    """{route: the longest body, in bytes, that its most values need}."""
    return {route: values * VALUE_BYTES + BODY_SLACK for route, values in limits.items()}


def npy_routes(service) -> frozenset[str]:
    """The routes whose answer is one ndarray: those that can answer `.npy`."""
    return frozenset(api.route for api in service.apis.values()
                     if api.output_spec.model_json_schema().get("type") == "tensor")


def accepts(headers: dict, media_type: bytes) -> bool:
    """Whether the Accept header names `media_type` (with any parameters, q > 0)."""
    for item in headers.get(b"accept", b"").split(b","):
        kind, *params = item.split(b";")
        if kind.strip().lower() != media_type:
            continue
        q = [p.split(b"=", 1)[1] for p in params if p.strip().lower().startswith(b"q=")]
        try:
            return not q or float(q[0]) > 0
        except ValueError:  # a malformed q: as if it were absent
            return True
    return False


def route_limits(service) -> dict[str, int]:
    """{route: the most values its valid body holds} for every API of a BentoML service,
    from the service's own route list and input schemas."""
    return {api.route: max_values(api.input_spec.model_json_schema()) for api in service.apis.values()}


class RequestGuard:
    """ASGI middleware for every POST to an API route (`limits`: route -> the most values
    a valid body holds). Before BentoML parses a body it answers 415 unless the body is
    JSON, and 413 when the body is longer than the largest valid one could be or
    holds far more values (counted by their commas, in C, in microseconds) than a
    valid one: a body of two million zeros in one z is refused before any list is built.
    Bodies sent without a Content-Length are read up to the bound and cut off there."""

    def __init__(self, app, limits: dict[str, int], npy: frozenset[str] = frozenset(),
                 npy_request: str = ""):
        self.app = app
        # Routes answering `.npy` to `Accept: application/x-npy`: the request goes on with
        # the Content-Type of the serializer that writes it (serving/bentoml_private.py).
        self.npy, self.npy_request = npy, npy_request.encode()
        self.values = dict(limits)
        self.max_body = body_bounds(self.values)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.values:
            return await self.app(scope, receive, send)
        route = scope["path"]
        max_body = self.max_body[route]
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            return await _reject(send, 415, "content-type: expected application/json")
        too_long = f"body: larger than {max_body} bytes, the most a valid {route} request takes"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return await _reject(send, 413, too_long)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if len(body) > max_body:
                return await _reject(send, 413, too_long)
            if not message.get("more_body", False):
                break
        # n values have n - 1 separating commas. Up to twice a valid body's count goes on to
        # the schema, so that one vector too many is answered 400 naming the field; far
        # more is what no client sends by mistake.
        commas = body.count(b",")
        if commas > 2 * self.values[route] + 64:
            return await _reject(send, 413, f"body: {commas + 1} values, far more than a valid {route} "
                                            f"request holds ({self.values[route]})")

        if route in self.npy and accepts(headers, b"application/x-npy"):
            scope = dict(scope, headers=[(k, self.npy_request if k == b"content-type" else v)
                                         for k, v in scope["headers"]])

        async def replay():
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await self.app(scope, replay, send)


async def _reject(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
