"""The names app (app_src/) builds and has its routes; no database needed."""
import sys
from pathlib import Path

APP_SRC = Path(__file__).resolve().parents[2] / "app_src"
if str(APP_SRC) not in sys.path:  # until pytest's pythonpath lists app_src
    sys.path.insert(0, str(APP_SRC))

from names import create_app  # noqa: E402


def test_blueprint_routes(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app("testing")
    rules = {rule.rule: rule for rule in app.url_map.iter_rules()}
    assert rules["/"].endpoint == "names.index"
    assert {"GET", "POST"} <= rules["/"].methods
    assert rules["/healthz"].endpoint == "names.healthz"
