"""The DigitalOcean API v2 operations Dropship uses, read at test time from DigitalOcean's
public OpenAPI specification (github.com/digitalocean/openapi, Apache-2.0).

The specification is not part of this repository: it sits beside it, at
``<repo>/../shared/do-openapi/specification/DigitalOcean-public.v2.yaml`` (CI puts ``shared/``
next to the clone), or wherever ``$DO_OPENAPI_SPEC`` points.

``load_operations(names)`` returns, per ``operationId``::

    {"method": "GET", "path": "/v2/droplets", "summary": ..., "parameters": [{name, in, required}],
     "request_body": {"required": bool, "schema": {...}} or None,
     "response": {"status": 200, "schema": {...} or None}}

Every ``$ref`` is resolved inline (only those the requested operations reach: files are parsed
on demand and cached), ``allOf`` parts are merged, and examples, descriptions and code samples
are left out. A ``discriminator`` mapping points, as a JSON pointer into
``{"operations": <the result>}`` (``#/operations/<id>/.../anyOf/<n>``), at the choice it selects.
Only the success response (200/201/202/204) of each operation is kept.
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


def load_operations(names: Iterable[str]) -> dict[str, dict]:
    """The operations ``names`` (spec ``operationId``s) of the spec at ``spec_path()``, resolved
    (see the module docstring). Parsed once per process; each call returns a fresh copy."""
    return copy.deepcopy(_load_operations(tuple(names), spec_path().resolve()))


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
            codes = [c for c in op["responses"] if str(c) in _SUCCESS]
            if len(codes) != 1:
                raise ValueError(f"{op_id}: expected one success response, found {codes}")
            resp, resp_file = self.deref(op["responses"][codes[0]], op_file)
            content = (resp.get("content") or {}).get("application/json")
            entry["response"] = {
                "status": int(codes[0]),
                "schema": self.schema(content["schema"], resp_file, f"{prefix}/response/schema")
                if content and "schema" in content else None,
            }
            result[op_id] = entry
        return result


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
