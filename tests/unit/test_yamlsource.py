"""YAML that a config file never needs is refused with one located line, not a traceback."""
from __future__ import annotations

import pytest

from provision.errors import InventoryError, one_line
from provision.yamlsource import MAX_NODES, load


def error(text: str) -> str:
    with pytest.raises(InventoryError) as exc:
        load(text, "inv.yaml")
    message = str(exc.value)
    assert len(message.splitlines()) == 1 and message.startswith("inv.yaml")
    return message


def test_an_alias_bomb_stops_at_the_node_limit():
    bomb = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    bomb += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
    assert f"more than {MAX_NODES} values" in error("\n".join(bomb))


def test_a_recursive_alias_is_a_cycle():
    assert "a cycle" in error("loop: &loop [*loop]\n")
    assert "inv.yaml:1: self.a" in error("self: &s {a: *s}\n")


def test_deep_nesting_and_bad_characters():
    assert "nested" in error("deep: " + "[" * 5000 + "]" * 5000)
    assert "nested deeper than" in error("deep: " + "[" * 300 + "]" * 300)
    assert "inv.yaml:2: (syntax): the file holds a character" in error("a: 1\nb: \x07\n")


def test_keys_must_be_scalars_and_tags_be_safe():
    assert "a key must be a plain name" in error("? [a, b]\n: 1\n")
    assert "cannot read the value" in error("x: !!python/object:os.system ls\n")
    assert "cannot read the value" in error("x: !custom y\n")


def test_merge_keys_are_applied_with_their_lines():
    data = load("base: &b {user: deploy, port: 22}\nweb:\n  <<: *b\n  port: 2222\n", "inv.yaml")
    assert dict(data["web"]) == {"user": "deploy", "port": 2222}
    assert data["web"].line_of("port") == 4


def test_one_line_escapes_what_breaks_or_hides_a_line():
    assert one_line("a\nb\u2028c\x1b[31m\u202e ok ünï 🚀") == "a\\nb\\u2028c\\x1b[31m\\u202e ok ünï 🚀"
    assert str(InventoryError("inv.yaml", 3, "envs.line1\nline2", "bad")) == "inv.yaml:3: envs.line1\\nline2: bad"
