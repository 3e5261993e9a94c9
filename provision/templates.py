"""Jinja2 rendering of everything under ``templates/``: undefined variables are errors."""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_compile = threading.Lock()   # hosts render in parallel threads: compile each template once


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


def render(name: str, **values) -> bytes:
    """Render ``templates/<name>`` with ``values``; a missing variable raises."""
    with _compile:
        template = _environment().get_template(name)
    return template.render(**values).encode()


def template_names() -> list[str]:
    return sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.j2"))
