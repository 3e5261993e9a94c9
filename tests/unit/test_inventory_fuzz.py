"""inventory.yaml fuzzed: hundreds of seeded mutations of the repository's file (values of every
type, hostile strings, renamed, duplicated and unknown keys, wrong nesting, anchors, aliases and
broken syntax) end in a one-line InventoryError naming the file, never in a traceback.

The mutations walk whatever the YAML holds, so new keys are covered without changing this file.
Reproduce one case with DROPSHIP_FUZZ_SEED=<seed> (printed on failure).
"""
from __future__ import annotations

import copy
import datetime
import os
import random
import traceback
from pathlib import Path

import pytest
import yaml

from provision.errors import DropshipError
from provision.inventory import load_inventory
from provision.inventory_view import describe

REPO = Path(__file__).resolve().parents[2]

SEED = int(os.environ.get("DROPSHIP_FUZZ_SEED", "20261202"))
CASES = 600

HOSTILE = [
    ";", "a; touch CANARY", "$(touch CANARY)", "`touch CANARY`", "'", '"', "it's \"quoted\"", "line1\nline2",
    "a b", " ", "\t", "\0", "nul\0byte", "\u202eevil", "\U0001F680", "ünïcödé", "x" * 5000, "}", "{", "${HOME}",
    "\\", "\r\n", "--help", "-", "*", "../../..", "%s", "{{ x }}", "a\u2028b", "\x1b[31m", "\x85", "_",
    "web-1; reboot", "app_src\n", "/", "~", "~nobody/x", "*.example.com", "0", "yes", "null",
]
VALUES = [[], ["a", 1], {}, {"x": 1}, 0, -1, 1, 22, 2 ** 64, 10 ** 100, -(10 ** 30), True, False, None, 1.5,
          float("inf"), float("-inf"), float("nan"), "", datetime.date(2026, 1, 1), {"env": "X"},
          {"secret": "a b"}, {"env": "X", "secret": "y"}, [[[]]], [{"name": None}]]
TAGS = ["!!binary aGk=", "!!timestamp 2020-01-01", "!!set {a, b}", "!!python/object:os.system x",
        "!!float .nan", "!custom x", "!!omap [{a: 1}]", "!!pairs [[a, 1]]", "*undefined", "!!int 0x1F",
        "2026-01-01", "2026-01-01T00:00:00Z", "0o777", "1_000", ".inf", "~", "? [a, b]"]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _at(data, path):
    for step in path:
        data = data[step]
    return data


def _value(rng: random.Random):
    return copy.deepcopy(rng.choice(VALUES)) if rng.random() < 0.5 else rng.choice(HOSTILE)


def _key(rng: random.Random, data):
    keys = [p[-1] for p in _paths(data) if p and isinstance(p[-1], str)]
    return rng.choice([rng.choice(HOSTILE), rng.choice(keys), "unknown_key", 1, True, None, 2.5])


def mutate_data(data, rng: random.Random) -> str:
    """One structural mutation of ``data`` in place; returns what it did."""
    paths = [p for p in _paths(data) if p]
    path = rng.choice(paths)
    parent, last = _at(data, path[:-1]), path[-1]
    op = rng.choice(["delete", "replace", "replace", "replace", "rename", "add", "nest", "move", "alias", "empty"])
    if op == "delete":
        del parent[last]
    elif op in ("replace", "empty"):
        parent[last] = _value(rng) if op == "replace" else rng.choice(["", [], {}, None])
    elif op == "rename" and isinstance(parent, dict):
        new = _key(rng, data)
        parent[new] = parent.pop(last)
    elif op == "add":
        target = rng.choice([_at(data, p) for p in _paths(data) if isinstance(_at(data, p), dict)])
        target[_key(rng, data)] = _value(rng)
    elif op == "nest":
        parent[last] = rng.choice([[parent[last]], {"x": parent[last]}, {last if isinstance(last, str) else "k":
                                                                        parent[last]}])
    elif op == "move":            # to a mapping outside the moved value (never into itself: no cycles)
        target = rng.choice([_at(data, p) for p in _paths(data)
                             if isinstance(_at(data, p), dict) and p[:len(path)] != path])
        target[last if not isinstance(last, int) else "moved"] = parent[last]
    elif op == "alias":           # the same object twice: yaml.safe_dump writes an anchor and an alias
        other = rng.choice([p for p in paths if path[:len(p)] != p])     # never an ancestor: no cycles
        parent[last] = _at(data, other)
    else:
        parent[last] = _value(rng)
    return f"{op} {'.'.join(map(str, path))!r}"


def mutate_text(text: str, rng: random.Random) -> tuple[bytes, str]:
    """One textual mutation (syntax, indentation, tags, aliases, encodings); returns bytes and what it did."""
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    op = rng.choice(["dup", "dup", "del", "indent", "char", "truncate", "tab", "tag", "tag", "merge", "recursive",
                     "complex", "bytes", "deep", "bomb", "documents", "empty"])
    if op == "dup":
        lines.insert(i, lines[i])
    elif op == "del":
        del lines[i]
    elif op == "indent":
        lines[i] = (" " * rng.randint(1, 3) + lines[i]) if rng.random() < 0.5 else lines[i][rng.randint(1, 3):]
    elif op == "char":
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rng.choice(":{}[]&*!|>'\"%@`\t-#?,\\") + lines[i][pos:]
    elif op == "truncate":
        return text[:rng.randrange(len(text))].encode(), op
    elif op == "tab":
        lines[i] = "\t" + lines[i].lstrip(" ")
    elif op == "tag":
        key, sep, _ = lines[i].partition(": ")
        lines[i] = f"{key}: {rng.choice(TAGS)}" if sep else lines[i] + " " + rng.choice(TAGS)
    elif op == "merge":
        lines = [ln.replace("defaults:", "defaults: &d", 1) for ln in lines]
        lines.insert(i, " " * (len(lines[i]) - len(lines[i].lstrip())) + "<<: *d")
    elif op == "recursive":
        return (text + "\nloop: &loop [*loop]\nself: &s {a: *s}\n").replace("environments:", "environments: &e", 1) \
            .replace("droplets:", "droplets: *e", 1).encode(), op
    elif op == "complex":
        lines.insert(i, " " * (len(lines[i]) - len(lines[i].lstrip())) + rng.choice(["? [a, b]\n: 1", "{[a]: 1}: 2",
                                                                                    "? {a: 1}\n: 1", "[x]: 1"]))
    elif op == "bytes":
        raw = text.encode()
        pos = rng.randrange(len(raw))
        return raw[:pos] + rng.choice([b"\xff\xfe", b"\x00", b"\x07", b"\xc3", b"\xef\xbb\xbf", b"\x1b"]) + raw[pos:], op
    elif op == "deep":
        depth = rng.choice([200, 5000])
        lines.insert(i, "deep: " + "[" * depth + "]" * depth)
    elif op == "bomb":
        bomb = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        bomb += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
        lines = bomb + [ln.replace("size: s-2vcpu-4gb", "size: *a8") for ln in lines]
    elif op == "documents":
        lines.insert(i, rng.choice(["---", "...", "%YAML 1.1", "--- !!str"]))
    else:
        return rng.choice([b"", b"# only a comment\n", b"[]\n", b"42\n", b"~\n", b"- a\n"]), op
    return "\n".join(lines).encode(), f"{op} at line {i + 1}"


def case(index: int) -> tuple[bytes, str]:
    """The mutated inventory of case ``index`` (reproducible from SEED alone) and its description."""
    rng = random.Random(f"{SEED}:{index}")
    text = (REPO / "inventory.yaml").read_text()
    done = []
    if rng.random() < 0.7:
        data = yaml.safe_load(text)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            done.append(mutate_data(data, rng))
        text = yaml.safe_dump(data, allow_unicode=rng.random() < 0.5, sort_keys=False, width=rng.choice([80, 10 ** 6]))
    if not done or rng.random() < 0.3:
        raw, what = mutate_text(text, rng)
        done.append(what)
    else:
        raw = text.encode()
    return raw, "; ".join(done)


def check(path: Path, raw: bytes, index: int, what: str) -> None:
    path.write_bytes(raw)
    where = f"seed {SEED} case {index} ({what}); rerun with DROPSHIP_FUZZ_SEED={SEED}"
    try:
        envs = load_inventory(path)
        for env in envs.values():
            assert isinstance(describe(env), str)
    except DropshipError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, f"{where}: message is not one line: {message[:500]!r}"
        assert str(path) in message, f"{where}: message does not name the file: {message[:500]!r}"
    except Exception:   # noqa: BLE001 - any other exception is the bug this test looks for
        pytest.fail(f"{where}: traceback instead of an InventoryError:\n{traceback.format_exc()[-3000:]}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project folder whose inventory finds the repository's app_src."""
    (tmp_path / "app_src").symlink_to(REPO / "app_src")
    return tmp_path


def test_the_unmutated_inventory_loads(folder):
    path = folder / "inventory.yaml"
    path.write_bytes((REPO / "inventory.yaml").read_bytes())
    assert {"local", "staging", "production"} <= set(load_inventory(path))


@pytest.mark.parametrize("chunk", range(6))
def test_mutations_end_in_one_line_errors(folder, chunk):
    path = folder / "inventory.yaml"
    per = CASES // 6
    for index in range(chunk * per, (chunk + 1) * per):
        raw, what = case(index)
        check(path, raw, index, what)
