"""YAML loaded into plain dicts and lists that remember the line of every key (pure).

Validation errors must name the file, the line and the key; PyYAML's composed nodes carry the
marks, so mappings become ``LDict`` (a dict with ``.line`` and ``.lines[key]``) and sequences
``LList`` (a list with ``.line`` and ``.lines[index]``).
"""
from __future__ import annotations

import yaml

from .errors import InventoryError


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


def _convert(node, path, where=""):
    if isinstance(node, yaml.MappingNode):
        out = LDict(line=node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            dotted = f"{where}.{key}" if where else str(key)
            if key in out:
                raise InventoryError(path, key_node.start_mark.line + 1, dotted, "duplicate key",
                                     "keep one of the two entries")
            out[key] = _convert(value_node, path, dotted)
            out.lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        items = [_convert(v, path, f"{where}[{i}]") for i, v in enumerate(node.value)]
        return LList(items, line=node.start_mark.line + 1, lines=[v.start_mark.line + 1 for v in node.value])
    return _scalar(node)


def _scalar(node):
    """Ints, bools, nulls and strings as YAML's safe constructor reads them."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def load(text: str, path) -> LDict:
    """Parse ``text`` (from ``path``) into LDict/LList; syntax errors become InventoryError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InventoryError(path, line, "(syntax)", f"YAML syntax error: {exc.problem}",
                             "fix the YAML at that line (indentation, quotes, colons)") from None
    if node is None:
        return LDict(line=1)
    data = _convert(node, path)
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
