"""The DigitalOcean API v2 operations Dropship uses, read at test time from DigitalOcean's
public OpenAPI specification (github.com/digitalocean/openapi, Apache-2.0).

The specification is not part of this repository: it sits beside it, at
``<repo>/../shared/do-openapi/specification/DigitalOcean-public.v2.yaml`` (CI puts ``shared/``
next to the clone), or wherever ``$DO_OPENAPI_SPEC`` points.

``load_operations(names)`` returns, per ``operationId``::

    {"method": "GET", "path": "/v2/droplets", "summary": ..., "parameters": [{name, in, required}],
     "request_body": {"required": bool, "schema": {...}} or None,
     "response": {"status": 200, "schema": {...} or None, "headers": {name: schema}},
     "errors": {"401": {"schema": ..., "headers": ...}, ..., "default": {...}}}

Every ``$ref`` is resolved inline (only those the requested operations reach: files are parsed
on demand and cached), ``allOf`` parts are merged, and examples, descriptions and code samples
are left out. A ``discriminator`` mapping points, as a JSON pointer into
``{"operations": <the result>}`` (``#/operations/<id>/.../anyOf/<n>``), at the choice it selects.
Each operation has one success response (200/201/202/204); the others are its ``errors``.

``OpenApi(load_operations(names))`` checks values against those schemas: ``problems`` for one
value, ``exchange_problems`` for a whole request/answer (the fake API checks each of its own).
"""
from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Iterable

import yaml

ENV_VAR = "DO_OPENAPI_SPEC"

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """YAML 1.2-ish: only true/false are booleans (so an enum value ``off`` stays a string), and
    no timestamps."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers
         if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|false|True|False|TRUE|FALSE)$"), list("tTfF"))

_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DROP = {"example", "examples", "description", "x-codeSamples", "externalDocs", "summary"}
_SUCCESS = ("200", "201", "202", "204")


def spec_path() -> Path:
    """The root document of DigitalOcean's OpenAPI specification."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return (Path(__file__).resolve().parents[2].parent / "shared" / "do-openapi" / "specification"
            / "DigitalOcean-public.v2.yaml")


def require_spec() -> Path:
    """``spec_path()``, or FileNotFoundError saying where to put the specification."""
    path = spec_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"DigitalOcean's OpenAPI spec is not at {path}: put shared/do-openapi beside the "
            f"repository or set {ENV_VAR} to its specification/DigitalOcean-public.v2.yaml")
    return path


def load_operations(names: Iterable[str]) -> dict[str, dict]:
    """The operations ``names`` (spec ``operationId``s) of the spec at ``spec_path()``, resolved
    (see the module docstring). Parsed once per process; each call returns a fresh copy."""
    return copy.deepcopy(_load_operations(tuple(names), require_spec().resolve()))


@functools.lru_cache(maxsize=None)
def _load_operations(names: tuple[str, ...], root: Path) -> dict[str, dict]:
    return _Spec(root).operations(names)


class _Spec:
    def __init__(self, root: Path):
        self.root = root
        self._files: dict[Path, object] = {}

    # --- files and references -----------------------------------------------------------

    def load(self, path: Path):
        if path not in self._files:
            with open(path, "rb") as f:
                self._files[path] = yaml.load(f, Loader=_Loader)
        return self._files[path]

    def locate(self, ref: str, base: Path):
        """(node, file, pointer) that ``ref`` (relative to the file ``base``) points at."""
        file, _, pointer = ref.partition("#")
        path = (base.parent / file).resolve() if file else base
        node = self.load(path)
        for part in filter(None, pointer.split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, path, pointer

    def deref(self, node, base: Path):
        """Follow ``$ref``s until a node that is not a reference: (node, its file)."""
        while isinstance(node, dict) and "$ref" in node:
            node, base, _ = self.locate(node["$ref"], base)
        return node, base

    # --- schemas ------------------------------------------------------------------------

    def resolve(self, node, base: Path, stack: tuple = ()):
        """Fully dereference; merge allOf; drop documentation-only keys and discriminators."""
        if isinstance(node, list):
            return [self.resolve(x, base, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target, path, pointer = self.locate(node["$ref"], base)
            key = (path, pointer)
            if key in stack:
                raise RuntimeError(f"recursive $ref {node['$ref']} in {base}")
            out = self.resolve(target, path, stack + (key,))
            extra = {k: v for k, v in node.items() if k != "$ref" and k not in _DROP}
            return {**out, **self.resolve(extra, base, stack)} if extra else out
        out = {}
        for k, v in node.items():
            if k in _DROP or k == "discriminator":   # discriminator: see schema()
                continue
            if k == "properties":                    # property names may be e.g. "description"
                out[k] = {name: self.resolve(s, base, stack) for name, s in v.items()}
            else:
                out[k] = self.resolve(v, base, stack)
        if "allOf" in out:
            merged: dict = {}
            for part in out.pop("allOf"):
                merged = _merge(merged, part)
            out = _merge(merged, out)
        return out

    def schema(self, node, base: Path, pointer_prefix: str):
        """A resolved schema; a discriminator mapping is rewritten to pointers into the result."""
        resolved = self.resolve(node, base)
        disc = node.get("discriminator") if isinstance(node, dict) else None
        if disc:
            choices_key = "anyOf" if "anyOf" in node else "oneOf"
            targets = [self.locate(choice["$ref"], base)[1:] for choice in node[choices_key]]
            mapping = {value: f"{pointer_prefix}/{choices_key}/{targets.index(self.locate(ref, base)[1:])}"
                       for value, ref in disc.get("mapping", {}).items()}
            resolved["discriminator"] = {"propertyName": disc["propertyName"], "mapping": mapping}
        return resolved

    # --- operations ---------------------------------------------------------------------

    def find(self, names: tuple[str, ...]) -> dict[str, tuple[str, str, dict, Path]]:
        """operationId -> (method, path template, operation, its file). Opens the file whose
        name is the operationId first (DigitalOcean's layout), other files only if needed."""
        root = self.load(self.root)
        candidates = []                              # (method, template, node)
        for template, item in (root.get("paths") or {}).items():
            for method, op in (item or {}).items():
                if method in _HTTP_METHODS:
                    candidates.append((method, template, op))

        def stem(op) -> str | None:
            return Path(op["$ref"].partition("#")[0]).stem if isinstance(op, dict) and "$ref" in op else None

        found: dict[str, tuple[str, str, dict, Path]] = {}
        wanted = set(names)
        likely = [c for c in candidates if stem(c[2]) in wanted]
        others = [c for c in candidates if stem(c[2]) not in wanted]
        for method, template, node in likely + others:
            if not wanted - found.keys():
                break
            op, op_file = self.deref(node, self.root)
            op_id = op.get("operationId")
            if op_id in wanted and op_id not in found:
                found[op_id] = (method, template, op, op_file)
        missing = [n for n in names if n not in found]
        if missing:
            raise KeyError(f"operations not in {self.root}: {', '.join(missing)}")
        return found

    def operations(self, names: tuple[str, ...]) -> dict[str, dict]:
        found = self.find(names)
        result = {}
        for op_id in names:
            method, template, op, op_file = found[op_id]
            prefix = f"#/operations/{op_id}"
            entry = {"method": method.upper(), "path": template, "summary": op.get("summary")}
            params = []
            for p in op.get("parameters", []):
                p, _ = self.deref(p, op_file)
                params.append({"name": p["name"], "in": p["in"], "required": bool(p.get("required", False))})
            entry["parameters"] = params
            body = op.get("requestBody")
            if body:
                body, body_file = self.deref(body, op_file)
                entry["request_body"] = {
                    "required": bool(body.get("required", False)),
                    "schema": self.schema(body["content"]["application/json"]["schema"], body_file,
                                          f"{prefix}/request_body/schema"),
                }
            else:
                entry["request_body"] = None
            codes = [str(c) for c in op["responses"] if str(c) in _SUCCESS]
            if len(codes) != 1:
                raise ValueError(f"{op_id}: expected one success response, found {codes}")
            responses = {str(c): r for c, r in op["responses"].items()}
            entry["response"] = {"status": int(codes[0]),
                                 **self.response(responses.pop(codes[0]), op_file, f"{prefix}/response")}
            entry["errors"] = {code: self.response(r, op_file, f"{prefix}/errors/{code}")
                               for code, r in responses.items()}
            result[op_id] = entry
        return result

    def response(self, node, base: Path, prefix: str) -> dict:
        """``{"schema": <JSON body schema> or None, "headers": {name: schema}}`` of a response."""
        resp, resp_file = self.deref(node, base)
        content = (resp.get("content") or {}).get("application/json")
        headers = {name.lower(): self.resolve(h, resp_file).get("schema", {})
                   for name, h in (resp.get("headers") or {}).items()}
        schema = (self.schema(content["schema"], resp_file, f"{prefix}/schema")
                  if content and "schema" in content else None)
        return {"schema": schema, "headers": headers}


def _merge(a: dict, b: dict) -> dict:
    """``b`` merged into a copy of ``a`` (allOf): properties merged, required united, else first wins."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if k == "properties":
            props = out.setdefault("properties", {})
            for name, s in v.items():
                props[name] = _merge(props[name], s) if name in props else copy.deepcopy(s)
        elif k == "required":
            out["required"] = list(dict.fromkeys([*out.get("required", []), *v]))
        elif k not in out:
            out[k] = copy.deepcopy(v)
    return out


# --- checking values against the loaded schemas --------------------------------------------

_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
          "array": (list,), "object": (dict,)}


class OpenApi:
    """Operations from ``load_operations`` and just enough of a schema checker for them."""

    def __init__(self, operations: dict[str, dict]):
        self.doc = {"operations": operations}      # discriminator mappings point into this
        self.operations: dict[str, dict] = operations

    def find(self, method: str, path: str) -> dict | None:
        """The operation that serves ``method path`` (a template or a concrete path with ?query)."""
        for op in self.operations.values():
            pattern = re.sub(r"\{[^}]+\}", r"[^/]+", op["path"])
            if op["method"] == method and re.fullmatch(pattern, path.split("?")[0]):
                return op
        return None

    def operation(self, method: str, path: str) -> dict:
        op = self.find(method, path)
        if op is None:
            raise AssertionError(f"no operation in the spec for {method} {path}")
        return op

    def request_schema(self, method: str, path: str) -> dict:
        return self.operation(method, path)["request_body"]["schema"]

    def pointer(self, ref: str):
        node = self.doc
        for part in filter(None, ref.partition("#")[2].split("/")):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def problems(self, schema: dict, value, where: str = "", request: bool = False) -> list[str]:
        """What is wrong with ``value``: missing required keys, wrong types (``nullable`` honoured),
        values outside an enum, and for request bodies keys the schema does not accept."""
        choices = schema.get("oneOf") or schema.get("anyOf")
        if choices:
            disc = schema.get("discriminator")
            if disc and isinstance(value, dict) and value.get(disc["propertyName"]) in disc["mapping"]:
                chosen = self.pointer(disc["mapping"][value[disc["propertyName"]]])
                return self.problems(chosen, value, where, request)
            found = [self.problems(c, value, where, request) for c in choices]
            if not all(found):
                return []
            return [p for f in found for p in f]
        name = where or "body"
        if value is None:
            return [] if schema.get("nullable") else [f"{name} is null"]
        declared = schema.get("type") or ("object" if "properties" in schema else None)
        if declared in _TYPES and (not isinstance(value, _TYPES[declared])
                                   or (declared != "boolean" and isinstance(value, bool))):
            return [f"{name} is not {declared}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{name} is not one of {schema['enum']}"]
        out: list[str] = []
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                out += self.problems(schema["items"], item, f"{name}[{i}]", request)
        if isinstance(value, dict) and ("properties" in schema or "required" in schema):
            props = schema.get("properties") or {}
            prefix = f"{where}." if where else ""
            out += [f"missing {prefix}{k}" for k in schema.get("required") or [] if k not in value]
            if request:
                writable = {k for k, v in props.items() if not v.get("readOnly")}
                out += [f"unknown {prefix}{k}" for k in value if k not in writable]
            for key, item in value.items():
                if key in props:
                    out += self.problems(props[key], item, f"{prefix}{key}", request)
        return out

    def exchange_problems(self, method: str, path: str, status: int, request, answer,
                          headers: dict[str, str]) -> list[str]:
        """What in one exchange breaks the spec: an operation it lacks, an undocumented status, an
        accepted (2xx) request body that does not fit, an answer body or a documented header
        (present, integers as integers) that does not fit. Each problem names the exchange."""
        where = f"{method} {path.split('?')[0]} -> {status}"
        op = self.find(method, path)
        if op is None:
            return [f"{where}: no such operation in the spec"]
        out: list[str] = []
        if 200 <= status < 300:
            response = op["response"]
            if status != response["status"]:
                out.append(f"the spec answers {response['status']}")
            spec_body = op["request_body"]
            if spec_body and (request is not None or spec_body["required"]):
                out += [f"request {p}" for p in self.problems(spec_body["schema"], request, request=True)]
        else:
            response = op["errors"].get(str(status)) or op["errors"].get("default")
            if response is None:
                return [f"{where}: status not documented"]
        if response["schema"] is None:
            out += [] if answer is None else ["a body where the spec has none"]
        else:
            out += self.problems(response["schema"], answer)
        sent = {k.lower(): v for k, v in headers.items()}
        for name, schema in response["headers"].items():
            if name not in sent:
                out.append(f"missing header {name}")
            elif schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", str(sent[name])):
                out.append(f"header {name} is not integer")
        return [f"{where}: {p}" for p in out]
