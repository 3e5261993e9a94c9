"""The bytecode set-up step: which packages Dropship's code imports, and what those require."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "compile_bytecode", Path(__file__).resolve().parents[2] / "scripts" / "compile_bytecode.py")
compile_bytecode = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compile_bytecode)


def test_imports_anywhere_in_the_code_count_deferred_ones_too(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import os.path, json as j\nfrom . import sibling\nfrom .x import y\n"
        "def later():\n    from fabric import Connection\n    import yaml\n")
    (tmp_path / "b.py").write_text("from jinja2.sandbox import SandboxedEnvironment\n")
    assert compile_bytecode.imported_names(tmp_path) == {"os", "json", "fabric", "yaml", "jinja2"}


def test_what_a_package_requires_is_compiled_with_it_and_extras_are_not():
    needed = compile_bytecode.closure({"fabric"})
    assert {"fabric", "paramiko", "invoke", "cryptography", "bcrypt"} <= needed
    assert "pytest" not in needed and "playwright" not in needed
    assert compile_bytecode.closure({"no-such-distribution"}) == set()
