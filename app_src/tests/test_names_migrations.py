"""The real Alembic migrations: they build the schema the models expect, and undo it."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect


def test_migration_creates_name_table(database):
    insp = inspect(database.engine)
    assert "name" in insp.get_table_names()
    columns = {c["name"]: c for c in insp.get_columns("name")}
    assert set(columns) == {"id", "name", "created_at"}
    assert columns["name"]["type"].length == 64
    assert not columns["created_at"]["nullable"] and columns["created_at"]["default"] == "now()"
    assert [u["column_names"] for u in insp.get_unique_constraints("name")] == [["name"]]


def test_models_match_migrations(database):
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), database.metadata)
    assert diff == [], "models changed without a migration: run `flask --app wsgi db migrate`"


def test_downgrade_and_upgrade_again(database):
    database.session.remove()
    downgrade(revision="base")
    try:
        assert "name" not in inspect(database.engine).get_table_names()
    finally:
        upgrade()
    assert "name" in inspect(database.engine).get_table_names()
