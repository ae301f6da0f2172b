"""OpenAPI documents as tools: each operation of an OpenAPI 3.x document becomes a `ToolSpec` (its
arguments a JSON schema) and an `Operation` (how to turn those arguments into a request). Used by
openapi.py's `OpenApiPlugin`; docs/plugins.md describes the mapping.

Parameters `in` path, query and header become arguments of their own names (one that clashes with an
earlier one is prefixed with where it goes: `query_id`); cookies and the Accept, Content-Type and
Authorization headers are not arguments. A JSON request body that is an object whose property names
clash with no parameter is merged in (its properties become arguments); any other JSON body is one
`body` argument. Local `$ref`s are expanded; a recursive one accepts any value where it recurses.
"""

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from chatloop.tools.base import ToolSpec, safe_name

log = logging.getLogger(__name__)

MAX_SCHEMA_NODES = 200_000  # expanding $refs (and YAML aliases) of a hostile document stops here
MAX_DESCRIPTION = 1024
# TRACE is left out: it echoes the request back, credentials included.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
READ_ONLY = {"get", "head"}
NOT_PARAMETERS = {"accept", "content-type", "authorization"}  # OpenAPI: header parameters so named are ignored
# OpenAPI 3.0 schema keywords that are no JSON Schema (or only describe examples): left out of tool schemas.
DROPPED_KEYWORDS = {"example", "examples", "xml", "externalDocs", "discriminator"}
VALUE_KEYWORDS = {"enum", "const", "default", "required"}  # their values are data, not schemas


@dataclass(frozen=True)
class Param:
    arg: str  # the argument's name in the tool's schema
    name: str  # the parameter's name in the request
    where: str  # path | query | header


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template, e.g. /todos/{id}
    params: tuple[Param, ...]
    # None: no body; "arg": the argument `body_keys[0]` is the body; "merged": the arguments `body_keys` form it
    body: str | None
    body_keys: tuple[str, ...] = ()
    body_required: bool = False


def operations(doc: dict, source: str, note: str, error) -> tuple[list[ToolSpec], dict[str, Operation]]:
    """The tools of an OpenAPI document (local names: operationIds, else METHOD_path, made safe and
    unique) and their operations by tool name. `note` goes in front of each description; `error(why)`
    makes the exception for a broken document."""
    resolver = _Resolver(doc, error)
    specs, ops = [], {}
    paths = doc.get("paths") or {}
    if not isinstance(paths, dict):
        raise error("`paths` must be an object")
    for path, item in paths.items():
        if isinstance(item, dict) and "$ref" in item:
            item = resolver.expand(item)
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, dict):
            raise error(f"paths: {path!r} must start with / and hold an object")
        shared = resolver.expand(item.get("parameters") or [])
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            # 32: the toolbox keeps that much of a source's tool name, so names stay unique after it
            local = safe_name(str(op.get("operationId") or f"{method}{path}"), 32)
            taken, n = local, 2
            while local in ops:
                local = f"{taken[:32 - len(str(n)) - 1]}_{n}"
                n += 1
            schema, operation = _operation(method, path, shared, op, resolver, error)
            if operation is None:
                continue
            specs.append(ToolSpec(name=local, description=_describe(method, path, op, note), parameters=schema,
                                  read_only=method in READ_ONLY, source=source,
                                  title=op.get("summary") if isinstance(op.get("summary"), str) else None))
            ops[local] = operation
    return specs, ops


def _operation(method: str, path: str, shared: list, op: dict, resolver: "_Resolver",
               error) -> tuple[dict, Operation | None]:
    """An operation's argument schema and request plan (None: it cannot be called, e.g. a required
    body that is not JSON)."""
    where_op = f"{method.upper()} {path}"
    merged: dict[tuple, dict] = {}
    for p in [*shared, *resolver.expand(op.get("parameters") or [])]:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p.get("in"):
            raise error(f"{where_op}: a parameter needs `name` and `in`")
        merged[(p["name"], p["in"])] = p  # the operation's own override the path item's
    properties: dict[str, dict] = {}
    required: list[str] = []
    params: list[Param] = []

    def add(p: dict, name: str, where: str) -> None:
        arg = name if name not in properties else safe_name(f"{where}_{name}")
        schema = p.get("schema")
        if schema is None and isinstance(p.get("content"), dict) and p["content"]:
            schema = next(iter(p["content"].values())).get("schema")
        schema = json_schema(schema if isinstance(schema, dict) else {})
        if isinstance(p.get("description"), str) and "description" not in schema:
            schema["description"] = p["description"]
        properties[arg] = schema
        if p.get("required") or where == "path":
            required.append(arg)
        params.append(Param(arg, name, where))

    for (name, where), p in merged.items():
        if where == "cookie" or (where == "header" and name.lower() in NOT_PARAMETERS):
            continue
        if where not in ("path", "query", "header"):
            raise error(f"{where_op}: parameter {name!r} is `in: {where}`")
        if where == "path" and "{" + name + "}" not in path:
            continue  # declared but not in the template: nothing to fill
        add(p, name, where)
    for name in _template_names(path):  # in the template but not declared: still needed
        if (name, "path") not in merged:
            add({"schema": {"type": "string"}}, name, "path")

    body, body_keys = None, ()
    request = resolver.expand(op.get("requestBody")) if op.get("requestBody") is not None else None
    if isinstance(request, dict):
        content = request.get("content") if isinstance(request.get("content"), dict) else {}
        kind = next((t for t in content if t.split(";")[0].strip() == "application/json"
                     or t.split(";")[0].strip().endswith("+json")), None)
        if kind is None:
            if request.get("required"):
                log.warning("OpenAPI operation %s left out: its body is not JSON (%s)", where_op,
                            ", ".join(content) or "no content")
                return {}, None
        else:
            schema = _request_schema(json_schema((content[kind] or {}).get("schema") or {}))
            fields = schema.get("properties")
            if (schema.get("type", "object") in ("object", ["object"]) and isinstance(fields, dict) and fields
                    and not set(fields) & set(properties)):
                properties.update(fields)
                if request.get("required"):
                    required += [k for k in schema.get("required", []) if k in fields]
                body, body_keys = "merged", tuple(fields)
            else:
                arg = "body" if "body" not in properties else "request_body"
                properties[arg] = schema
                if request.get("required"):
                    required.append(arg)
                body, body_keys = "arg", (arg,)
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(dict.fromkeys(required))
    return schema, Operation(method, path, tuple(params), body, body_keys,
                             bool(isinstance(request, dict) and request.get("required")))


def _describe(method: str, path: str, op: dict, note: str) -> str:
    parts = [op[k].strip() for k in ("summary", "description") if isinstance(op.get(k), str) and op[k].strip()]
    text = "\n\n".join(dict.fromkeys(parts)) or f"{method.upper()} {path}"
    return (f"{note}\n{text}" if note else text)[:MAX_DESCRIPTION]


class _Resolver:
    """Expands local `$ref`s (`#/components/...`); a reference met again inside itself becomes `{}`
    (any value), so recursive schemas end."""

    def __init__(self, doc: dict, error):
        self.doc, self.error, self.nodes = doc, error, 0

    def expand(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_SCHEMA_NODES:
            raise self.error(f"the document expands to more than {MAX_SCHEMA_NODES} schema nodes")
        if isinstance(node, list):
            return [self.expand(v, stack) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return {k: self.expand(v, stack) for k, v in node.items()}
        if not ref.startswith("#"):
            log.warning("external $ref %s is not followed (accepting any value there)", ref)
            return {}
        if ref in stack:
            return {}
        if len(stack) > 64:
            raise self.error(f"$ref {ref}: references nest deeper than 64")
        out = self.expand(self._pointer(ref), (*stack, ref))
        siblings = {k: v for k, v in node.items() if k != "$ref"}  # 3.1: a $ref may sit beside a description
        if siblings and isinstance(out, dict):
            out = {**out, **self.expand(siblings, stack)}
        return out

    def _pointer(self, ref: str) -> Any:
        node: Any = self.doc
        for part in unquote(ref[1:]).split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.error(f"$ref {ref} points at nothing")
        return node


def json_schema(node: Any) -> Any:
    """An OpenAPI schema as JSON Schema: 3.0's `nullable` and boolean exclusiveMinimum/Maximum
    rewritten, example-only keywords left out."""
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in DROPPED_KEYWORDS:
            continue
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: json_schema(s) for name, s in value.items()}
        else:
            out[key] = value if key in VALUE_KEYWORDS else json_schema(value)
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool):
            if out.pop(exclusive) and bound in out:
                out[exclusive] = out.pop(bound)
    return out


def _request_schema(schema: dict) -> dict:
    """A body schema without its readOnly properties (the server sets those; they are no input)."""
    fields = schema.get("properties")
    if not isinstance(fields, dict):
        return schema
    kept = {k: v for k, v in fields.items() if not (isinstance(v, dict) and v.get("readOnly") is True)}
    if len(kept) == len(fields):
        return schema
    out = {**schema, "properties": kept}
    if isinstance(schema.get("required"), list):
        out["required"] = [k for k in schema["required"] if k in kept]
    return out


def _template_names(path: str) -> list[str]:
    names, rest = [], path
    while "{" in rest and "}" in rest.split("{", 1)[1]:
        name, rest = rest.split("{", 1)[1].split("}", 1)
        names.append(name)
    return names


