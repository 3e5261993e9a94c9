"""Bytecode for Dropship and the installed packages it runs on, written once.

A machine that sets PYTHONDONTWRITEBYTECODE (CI images often do) never caches bytecode: every
command would compile its imports afresh (about 0.5 s each). The packages are those Dropship's code
imports, anywhere in it (many imports are deferred), and what they require, found from the
installed distributions' metadata; test-only packages are left alone.
"""
from __future__ import annotations

import ast
import compileall
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"[A-Za-z0-9._-]+")


def imported_names(root: Path) -> set[str]:
    """Top-level names of every absolute import in the ``.py`` files under ``root`` (pure)."""
    names = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def closure(dists: set[str]) -> set[str]:
    """``dists`` and every distribution they require (extras left out), as installed."""
    todo, seen = list(dists), set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(key)
        todo += [NAME.match(r).group(0) for r in requires if "extra ==" not in r and NAME.match(r)]
    return seen


def main() -> None:
    by_module = metadata.packages_distributions()
    roots = {d for n in imported_names(ROOT / "provision") for d in by_module.get(n, [])}
    files = [ROOT / "tasks.py", *sorted((ROOT / "provision").rglob("*.py"))]
    for dist in sorted(closure(roots)):
        d = metadata.distribution(dist)
        files += [Path(d.locate_file(f)) for f in d.files or () if f.suffix == ".py"]
    with ProcessPoolExecutor() as pool:
        ok = all(pool.map(partial(compileall.compile_file, quiet=2), [f for f in files if f.exists()], chunksize=64))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
