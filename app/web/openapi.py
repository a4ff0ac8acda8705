"""The OpenAPI 3 document of the REST API, made from what the handlers themselves use.

Nothing here is a second description to keep in sync: the paths come from
the route table (:mod:`app.web.routes`), the action (and so the role or
token scope) each method needs from the handler's ``actions`` table, and the
shape of query arguments and bodies from the same :class:`~app.spec.Spec`
classes the handlers validate with (:meth:`JsonHandler.query_spec`,
:meth:`JsonHandler.body_spec`): rule kinds and widget kinds included, so a
new kind appears in the document the moment it exists. Each handler method
adds a summary and its answers in its ``api`` table (:class:`Op`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import param

from app.spec import Spec
from app.web.access import ACTIONS, SCOPES

if TYPE_CHECKING:
    from app.web.routes import Route

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"],
         "additionalProperties": True}
ANY_OBJECT = {"type": "object", "additionalProperties": True}
COMMON = {400: "the request is malformed or invalid (the error says which field and why)",
          401: "no credentials, or a token that is unknown, revoked or expired",
          403: "the caller's role or token scopes do not allow it",
          404: "no such resource", 413: "the body is over the size limit"}


@dataclass(frozen=True)
class Op:
    """What the document says of one handler method besides what the code already declares."""

    summary: str
    query: type[Spec] | None = None
    body: type[Spec] | dict[str, Any] | None = None
    body_type: str = "application/json"
    ok: int = 200
    ok_type: str | tuple[str, ...] = "application/json"  # several: the answer is one of them
    ok_schema: dict[str, Any] = field(default_factory=lambda: ANY_OBJECT)
    also: tuple[int, ...] = ()  # other answers it may give (503, 429 ...)
    public: bool = False  # no credentials asked (a gateway's own token, a signed link)
    example: Any = None  # a body that works on the demo (schemathesis sends it too)


def _scalar_schema(p: param.Parameter) -> dict[str, Any]:
    if isinstance(p, param.Boolean):
        out: dict[str, Any] = {"type": "boolean"}
    elif isinstance(p, param.Selector) and not isinstance(p, param.ClassSelector):
        objects = [o for o in p.objects if o is not None]
        kind = "number" if all(isinstance(o, int | float) for o in objects) else "string"
        out = {"type": kind, "enum": objects}
    elif isinstance(p, param.Integer):
        out = {"type": "integer"}
    elif isinstance(p, param.Number):
        out = {"type": "number"}
    elif isinstance(p, param.String):
        out = {"type": "string"}
        if getattr(p, "regex", None):
            out["pattern"] = p.regex
    elif isinstance(p, param.Dict):
        out = {"type": "object", "additionalProperties": True}
    else:
        out = {}
    bounds = getattr(p, "bounds", None)
    if bounds and out.get("type") in ("integer", "number"):
        low, high = bounds
        if low is not None:
            out["minimum"] = low
        if high is not None:
            out["maximum"] = high
    return out


def param_schema(p: param.Parameter) -> dict[str, Any]:
    """Return the JSON schema of one parameter of a spec."""
    spec_class = getattr(p, "class_", None) if isinstance(p, param.ClassSelector) else None
    if isinstance(spec_class, type) and issubclass(spec_class, Spec):
        out = spec_schema(spec_class)
    elif isinstance(p, param.List):
        item = getattr(p, "item_type", None)
        items = spec_schema(item) if isinstance(item, type) and issubclass(item, Spec) else \
            {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"}}.get(item, {})
        out = {"type": "array", "items": items}
        bounds = getattr(p, "bounds", None)
        if bounds:
            if bounds[0] is not None:
                out["minItems"] = bounds[0]
            if bounds[1] is not None:
                out["maxItems"] = bounds[1]
    else:
        out = _scalar_schema(p)
    if p.doc:
        out = {**out, "description": " ".join(p.doc.split())}
    if p.allow_None and "type" in out:
        out["nullable"] = True
    return out


def spec_schema(cls: type[Spec]) -> dict[str, Any]:
    """Return the JSON schema of a spec class: its keys, their types and bounds; a kind per ``type:``."""
    if cls._kinds is not None and not cls.spec_type:
        return {"oneOf": [spec_schema(k) for _, k in sorted(cls.kinds().items())]}
    props = {key: param_schema(cls.param[key]) for key in cls.keys()}
    if cls.spec_type:
        props = {"type": {"type": "string", "enum": [cls.spec_type]}, **props}
    required = list(getattr(cls, "required", ()))
    if cls.spec_type:
        required = ["type", *required]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().split("\n")[0]
    return out


def query_parameters(cls: type[Spec]) -> list[dict[str, Any]]:
    """Return the query parameters a query spec declares."""
    required = set(getattr(cls, "required", ()))
    return [{"name": key, "in": "query", "required": key in required, "schema": param_schema(cls.param[key])}
            for key in cls.keys()]


_GROUP = re.compile(r"\{([a-z_]+)\}")


def document(routes: list[Route], *, title: str = "Vigie", version: str = "1") -> dict[str, Any]:
    """Return the OpenAPI 3.0 document of the routes that have an ``api`` table."""
    paths: dict[str, Any] = {}
    used_ids: set[str] = set()
    for route in routes:
        table: dict[str, Op] = getattr(route.handler, "api", {}) or {}
        if not table:
            continue
        item: dict[str, Any] = {}
        path_params = [{"name": name, "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": route.patterns.get(name, "^[^/]+$")}}
                       for name in _GROUP.findall(route.path)]
        for method, op in table.items():
            action = getattr(route.handler, "actions", {}).get(method.upper(), "users:manage")
            types = (op.ok_type,) if isinstance(op.ok_type, str) else op.ok_type
            responses: dict[str, Any] = {str(op.ok): {"description": "done", "content": {
                t: {"schema": op.ok_schema if t == "application/json" else {"type": "string"}} for t in types}}}
            if op.ok == 204:
                responses = {"204": {"description": "done (no body)"}}
            for code in (*COMMON, *op.also):
                if code == 401 and op.public and 401 not in op.also:
                    continue
                responses[str(code)] = {"description": COMMON.get(code, "see the summary"),
                                        "content": {"application/json": {"schema": ERROR}}}
            operation_id = f"{method.lower()}_{_operation_id(route.path)}"
            if operation_id in used_ids:  # /write beside /api/v1/write: outside /api/v1/, said so
                operation_id = f"{method.lower()}_root_{_operation_id(route.path)}"
            used_ids.add(operation_id)
            operation: dict[str, Any] = {
                "summary": op.summary, "operationId": operation_id,
                "tags": [route.path.split("/")[3] if route.path.startswith("/api/v1/") else "service"],
                "responses": responses, "x-vigie-action": None if op.public else action,
            }
            if not op.public:
                scopes = sorted(s for s, acts in SCOPES.items() if action in acts)
                least = ACTIONS.get(action)
                operation["description"] = (f"Needs `{action}`: the {least.name if least else '?'} role, or a "
                                            f"token with the scope {' or '.join(f'`{s}`' for s in scopes)}.")
                operation["security"] = [{"bearer": []}, {"session": []}]
            else:
                operation["security"] = []
            params = list(path_params)
            if op.query is not None:
                params += query_parameters(op.query)
            if params:
                operation["parameters"] = params
            if op.body is not None:
                schema = spec_schema(op.body) if isinstance(op.body, type) else op.body
                media: dict[str, Any] = {"schema": schema}
                if op.example is not None:
                    media["example"] = op.example
                operation["requestBody"] = {"required": True, "content": {op.body_type: media}}
            item[method.lower()] = operation
        paths[route.path] = item
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{title} REST API", "version": version,
                 "description": "Readings, series, alarms, layouts, access. Errors are JSON "
                                "`{\"error\": \"...\"}` with the HTTP status; lists take `limit` and `offset`."},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token: vgt_..."},
            "session": {"type": "apiKey", "in": "cookie", "name": "vigie_session",
                        "description": "a login session; state-changing calls also need X-XSRFToken"}}},
    }


def _operation_id(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.removeprefix("/api/v1/").lower()).strip("_") or "root"
