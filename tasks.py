"""Invoke entry point: `invoke --list` shows every Dropship task (defined in provision/cli.py)."""
from provision.cli import namespace

ns = namespace()
