"""What every module of Invoke tasks uses: user mistakes as one line, the environment from the
inventory, comma-separated names, JSON output."""
from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path

from invoke import Exit

from .errors import DropshipError

PROJECT = Path(__file__).resolve().parent.parent


def user_errors(fn):
    """Turn DropshipError into one line on stderr and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DropshipError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except BrokenPipeError:          # `invoke logs ... | head`: the reader left; no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=0) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def required(*names: str):
    """The flags a task cannot run without. Invoke makes an argument without a default positional,
    and a positional argument swallows the next word, `--help` included; so these default to None
    and are checked here, before anything is read or touched."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(c, *args, **kwargs):
            given = signature.bind_partial(c, *args, **kwargs).arguments
            missing = [name for name in names if given.get(name) is None]
            if missing:
                flags = " and ".join(f"--{name.replace('_', '-')}" for name in missing)
                raise DropshipError(f"{flags} missing", _missing_fix(c, missing))
            return fn(c, *args, **kwargs)

        return wrapper

    return decorate


def _missing_fix(c, missing: list[str]) -> str:
    if "env" in missing:
        try:
            from .inventory import load_inventory

            return f"pass --env with one of: {', '.join(load_inventory(inventory_path(c)))}"
        except DropshipError:
            return "pass --env with an environment of your inventory"
    return "every option is listed by `invoke TASK --help`"


def inventory_path(c) -> Path:
    configured = os.environ.get("DROPSHIP_INVENTORY") or c.config.get("dropship", {}).get("inventory",
                                                                                           "inventory.yaml")
    path = Path(configured)
    if not path.is_absolute() and not path.exists() and (PROJECT / path).exists():
        path = PROJECT / path
    return path


def environment(c, env: str):
    from .inventory import load_environment

    return load_environment(inventory_path(c), env)


def split_names(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def print_json(data) -> None:
    import json as _json

    print(_json.dumps(data))
