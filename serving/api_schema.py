"""The OpenAPI document at ``/docs.json``, corrected to say what the service really does.

BentoML generates the document from the API signatures but gets a few things wrong
that clients (and schemathesis, which tests the service against it) rely on:

- optional fields (``str | None``) lose their ``null`` in the inline request schemas;
- request bodies with required fields are not marked as required;
- error answers are documented with a ``detail`` string, while validation errors carry
  a list, and statuses the service does answer (413, 415, 429 and 503 with Retry-After,
  504, the admin 401/403/409) are missing.

:class:`HonestOpenAPI` serves the corrected document in place of BentoML's; everything
else passes through untouched.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Spec = dict[str, Any]

SPEC_PATH = "/docs.json"
ADMIN_PREFIX = "/admin/"
ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: Spec = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": "string", "description": "The request field at fault."},
        "detail": {"description": "Validation errors, one per field (a list), or text."},
    },
}
# Statuses every JSON API can answer besides its own, each with our JSON error body: bad
# input, a body over the size limit or not JSON, a server fault, not available (503) and
# overloaded (429, from serving.limits.ConcurrencyLimit).
API_ERRORS = {
    "400": "Bad Request: a field is missing or invalid",
    "413": "Payload Too Large: the body exceeds SEGREC_MAX_REQUEST_BYTES",
    "415": "Unsupported Media Type: send the body as application/json",
    "500": "Internal Server Error",
    "503": "Service Unavailable: no bundle loaded yet, or (POST /events, /admin/erase) the "
    "shared store that keeps pods consistent is out of reach; nothing was written. "
    "Retry after the Retry-After header's seconds",
    "429": "Too Many Requests: more than SEGREC_MAX_CONCURRENCY in flight in this pod; "
    "retry after the Retry-After header's seconds",
}
# These answers tell the client when to come back.
RETRY_AFTER = {"503", "429"}
RETRY_AFTER_HEADER: Spec = {
    "description": "Seconds to wait before retrying (SEGREC_RETRY_AFTER_SECONDS)",
    "schema": {"type": "integer", "minimum": 0},
}
# BentoML's own answer past the request timeout; its body is BentoML's, so no schema is
# promised.
TIMEOUT = {
    "504": "Gateway Timeout: the request ran past its time limit; the next one is served",
}
ADMIN_ERRORS = {
    "401": "Unauthorized: no bearer token",
    "403": "Forbidden: wrong bearer token, or admin endpoints are off",
    "409": "Conflict: the bundle or configuration was refused; the old one keeps serving",
}


def honest_spec(spec: Spec) -> Spec:
    """A corrected copy of BentoML's OpenAPI document ``spec`` (a plain dict)."""
    fixed = copy.deepcopy(spec)
    components = fixed.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in list(schemas.items()):
        schemas[name] = _nullable(schema)
    schemas["Error"] = ERROR_SCHEMA
    for path, item in fixed.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "x-bentoml-name" not in operation:
                continue  # infrastructure endpoints and mounted apps: as generated
            _fix_body(operation, schemas)
            errors = {**API_ERRORS, **(ADMIN_ERRORS if path.startswith(ADMIN_PREFIX) else {})}
            responses = operation.setdefault("responses", {})
            if "404" in responses:  # BentoML's own entry documents ``detail`` as text
                errors["404"] = responses["404"].get("description", "Not Found")
            for status, text in errors.items():
                responses[status] = {
                    "description": text,
                    "content": {"application/json": {"schema": ERROR}},
                }
                if status in RETRY_AFTER:
                    responses[status]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
            for status, text in TIMEOUT.items():
                responses[status] = {"description": text}
            if path.startswith(ADMIN_PREFIX):
                operation["security"] = [{"bearer": []}]
                components.setdefault("securitySchemes", {})["bearer"] = {
                    "type": "http",
                    "scheme": "bearer",
                }
    readiness = fixed.get("paths", {}).get("/readyz", {}).get("get")
    if readiness is not None:
        readiness.setdefault("responses", {})["503"] = {"description": "Not ready"}
    return fixed


def _fix_body(operation: Spec, schemas: dict[str, Spec]) -> None:
    body = operation.get("requestBody")
    if not body:
        return
    # The component keeps what the inline copy lost (the nullable fields).
    component = schemas.get(f"{operation['x-bentoml-name']}__Input")
    for media in body.get("content", {}).values():
        if component is not None:
            media["schema"] = {**copy.deepcopy(component), "title": "Input"}
        if media.get("schema", {}).get("required"):
            body["required"] = True


def _nullable(schema: Any) -> Any:
    """Pydantic's ``anyOf: [X, {type: null}]`` as OpenAPI 3.0's ``X`` + ``nullable``."""
    if isinstance(schema, list):
        return [_nullable(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _nullable(value) for key, value in schema.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        out.pop("anyOf")
        if len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


class HonestOpenAPI:
    """ASGI middleware answering ``GET /docs.json`` with :func:`honest_spec` of the
    document ``spec()`` returns (built once, on the first request)."""

    def __init__(self, app: Any, spec: Callable[[], Spec]) -> None:
        self.app = app
        self._spec = spec
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != SPEC_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(honest_spec(self._spec())).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})
