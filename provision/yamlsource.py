"""YAML loaded into plain dicts and lists that remember the line of every key (pure).

Validation errors must name the file, the line and the key; PyYAML's composed nodes carry the
marks, so mappings become ``LDict`` (a dict with ``.line`` and ``.lines[key]``) and sequences
``LList`` (a list with ``.line`` and ``.lines[index]``).
"""
from __future__ import annotations

import yaml

from .errors import InventoryError

MAX_NODES = 100_000     # values after alias expansion: a "billion laughs" file stops here
MAX_DEPTH = 200         # nesting (a deeper file is refused before Python's own limit)


class LDict(dict):
    line: int = 0

    def __init__(self, *args, line: int = 0, lines: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.line = line
        self.lines = dict(lines or {})

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


class LList(list):
    def __init__(self, *args, line: int = 0, lines: list | None = None):
        super().__init__(*args)
        self.line = line
        self.lines = list(lines or [])

    def line_of(self, index: int) -> int:
        return self.lines[index] if index < len(self.lines) else self.line


class _Converter:
    """Composed nodes to LDict/LList, refusing what a config file never needs: keys that are not
    scalars, recursive aliases, alias expansions past ``MAX_NODES`` and nesting past ``MAX_DEPTH``.
    Merge keys (``<<: *defaults``) are applied as YAML 1.1 says."""

    def __init__(self, path):
        self.path, self.count, self.active = path, 0, set()

    def fail(self, node, where: str, problem: str, fix: str):
        raise InventoryError(self.path, node.start_mark.line + 1, where or "(top level)", problem, fix)

    def convert(self, node, where: str = "", depth: int = 0):
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(node, where, f"more than {MAX_NODES} values once aliases are expanded",
                      "use fewer aliases (*name) of large anchors")
        if depth > MAX_DEPTH:
            self.fail(node, where, f"nested deeper than {MAX_DEPTH} levels", "flatten the structure")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, where)
        if id(node) in self.active:
            self.fail(node, where, "an alias refers to the anchor it is inside (a cycle)",
                      "remove the alias (*name) or move it out of its own anchor (&name)")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, where, depth)
            items = [self.convert(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node.value)]
            return LList(items, line=node.start_mark.line + 1, lines=[v.start_mark.line + 1 for v in node.value])
        finally:
            self.active.discard(id(node))

    def mapping(self, node, where: str, depth: int) -> LDict:
        own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        try:
            yaml.SafeLoader("").flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.fail(node, where, f"merge key (<<): {_problem(exc)}", "merge only mappings: `<<: *name`")
        except RecursionError:
            self.fail(node, where, "merge keys (<<) that refer to each other", "remove the cycle")
        merged = len(node.value) - own             # merged pairs come first; later ones override them
        out = LDict(line=node.start_mark.line + 1)
        local: set = set()
        for index, key_node_value in enumerate(node.value):
            key_node, value_node = key_node_value
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, where, "a key must be a plain name, not a list or mapping",
                          "write the key as a plain word")
            key = self.scalar(key_node, where)
            dotted = f"{where}.{key}" if where else str(key)
            if key in local:
                self.fail(key_node, dotted, "duplicate key", "keep one of the two entries")
            if index >= merged:
                local.add(key)
            out[key] = self.convert(value_node, dotted, depth + 1)
            out.lines[key] = key_node.start_mark.line + 1
        return out

    def scalar(self, node, where: str):
        """Ints, bools, nulls and strings as YAML's safe constructor reads them; other tags refused."""
        try:
            value = yaml.SafeLoader("").construct_object(node, deep=True)
        except (yaml.MarkedYAMLError, ValueError, TypeError, OverflowError) as exc:
            self.fail(node, where, f"cannot read the value {str(node.value)[:40]!r} ({_problem(exc)})",
                      "write it as a plain string, number or true/false")
        try:
            hash(value)
        except TypeError:
            self.fail(node, where, f"the tag {node.tag} makes a value no key can hold", "remove the tag")
        return value


def _problem(exc: BaseException) -> str:
    text = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:120]


def load(text: str, path) -> LDict:
    """Parse ``text`` (from ``path``) into LDict/LList; every YAML problem becomes InventoryError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InventoryError(path, line, "(syntax)", f"YAML syntax error: {_problem(exc)}",
                             "fix the YAML at that line (indentation, quotes, colons)") from None
    except yaml.reader.ReaderError as exc:
        raise InventoryError(path, text.count("\n", 0, max(0, exc.position)) + 1, "(syntax)",
                             f"the file holds a character YAML does not allow ({exc.character!r})",
                             "remove it, or write it as an escape inside double quotes (\\x07)") from None
    except yaml.YAMLError as exc:
        raise InventoryError(path, None, "(syntax)", f"YAML error: {_problem(exc)}", "fix the YAML") from None
    except RecursionError:
        raise InventoryError(path, None, "(syntax)", "nested too deeply to read", "flatten the structure") from None
    if node is None:
        return LDict(line=1)
    data = _Converter(path).convert(node)
    if not isinstance(data, LDict):
        raise InventoryError(path, 1, "(top level)", "expected a mapping with 'environments:'",
                             "start the file with 'environments:'")
    return data


def merged(base, override):
    """Deep-merge ``override`` onto ``base`` (mappings merge, everything else replaces)."""
    if isinstance(base, LDict) and isinstance(override, LDict):
        out = LDict(base, line=override.line or base.line, lines=base.lines)
        for key, value in override.items():
            out[key] = merged(base[key], value) if key in base else value
            out.lines[key] = override.line_of(key)
        return out
    return override
