"""Moving PostgreSQL to a host of its own: where a live release reads its database, whether the
new one is empty (a deploy refuses to serve an empty database there), and `db.copy`'s commands and
plan, refused before any host is contacted."""
import subprocess
import textwrap

import pytest

from provision import release as rel
from provision.errors import DropshipError
from provision.inventory import load_inventory
from provision.workflows.database import table_count_command
from provision.workflows.db_copy import dump_command, plan


def test_database_host_command_reads_the_host_of_database_url(tmp_path):
    cmd = rel.database_host_command(f"{tmp_path}/a b/.env")
    assert cmd == (f"sed -n 's/^DATABASE_URL=\".*@\\([^:/@]*\\):[0-9]*\\/.*/\\1/p' '{tmp_path}/a b/.env' "
                   "2>/dev/null; true")
    (tmp_path / "a b").mkdir()
    dotenv = tmp_path / "a b" / ".env"
    url = rel.database_url("u@x", "p@ss:w/rd\"$`", "shop", "10.110.0.7", driver="psycopg")
    dotenv.write_bytes(rel.env_file([("A", "DATABASE_URL=x@1.2.3.4:5/y"), ("DATABASE_URL", url), ("Z", "z")]))
    assert subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout == "10.110.0.7\n"
    dotenv.write_bytes(rel.env_file([("DATABASE_URL", rel.database_url("u", "p", "shop"))]))
    assert subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout == "127.0.0.1\n"
    dotenv.write_bytes(rel.env_file([("OTHER", "x")]))
    assert subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout == ""
    assert subprocess.run(["sh", "-c", rel.database_host_command(f"{tmp_path}/none/.env")]).returncode == 0


def test_table_count_and_dump_commands():
    assert table_count_command("shop") == (
        "runuser -u postgres -- psql -Atq -d shop -c \"select count(*) from pg_catalog.pg_tables where schemaname "
        "not in ('pg_catalog', 'information_schema')\"")
    assert dump_command("my db") == "runuser -u postgres -- pg_dump -Fc 'my db'"


def env(tmp_path, roles_of_web=("base", "nginx", "app")):
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent(f"""\
        environments:
          e:
            provider: local
            droplets:
              - {{name: web-1, size: s-1vcpu-1gb, roles: [{', '.join(roles_of_web)}]}}
              - {{name: db-1, size: s-1vcpu-1gb, roles: [base, postgres]}}
            apps:
              - {{name: shop, database: {{name: shop, user: shop, password: {{secret: shop_pw}}}}}}
              - {{name: blog, path: /blog, database: {{name: shop, user: shop, password: {{secret: shop_pw}}}}}}
              - {{name: docs, path: /docs}}
        """))
    return load_inventory(path)["e"]


def test_db_copy_plan(tmp_path):
    source, target, dbs = plan(env(tmp_path), "web-1")
    assert (source, target, [d.name for d in dbs]) == ("web-1", "db-1", ["shop"])     # each database once
    with pytest.raises(DropshipError, match=r"^db.copy: db-1 is the postgres host, the databases' destination"):
        plan(env(tmp_path), "db-1")
    with pytest.raises(DropshipError, match=r"^unknown host\(s\) web-9 in environment e"):
        plan(env(tmp_path), "web-9")
