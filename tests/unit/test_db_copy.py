"""Moving PostgreSQL to a host of its own: where a live release reads its database, whether the
new one is empty (a deploy refuses to serve an empty database there), and `db.copy`'s commands and
plan, refused before any host is contacted."""
import subprocess
import textwrap

import pytest

from provision import release as rel
from provision.errors import DropshipError
from provision.inventory import load_inventory
from provision.workflows import airflow_database as af_db
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


# --- Airflow's database ------------------------------------------------------------------------------

def airflow_env(tmp_path):
    (tmp_path / "dags").mkdir()
    path = tmp_path / "inventory.yaml"
    path.write_text(textwrap.dedent("""\
        environments:
          e:
            provider: local
            droplets:
              - {name: pipelines, size: s-2vcpu-4gb, roles: [base, docker, nginx, airflow]}
              - {name: pg, size: s-1vcpu-1gb, roles: [base, postgres]}
            apps:
              - {name: shop, database: {name: shop, user: shop, password: {secret: shop_pw}}}
            airflow:
              version: 2.11.0
              image: registry.example.org/team/airflow:2.11.0-py3.12
              dags: ./dags
              database: {name: meta, user: etl, password: {secret: meta_pw}}
        """))
    return load_inventory(path)["e"]


def test_db_copy_plan_copies_airflows_database_last(tmp_path):
    assert [d.name for d in plan(airflow_env(tmp_path), "pipelines")[2]] == ["shop", "meta"]


def test_where_airflow_services_read_their_database_is_read_from_their_environment():
    assert af_db.reads_now_command() == (
        "c=$(docker compose --project-directory /srv/airflow -p airflow ps -aq 2>/dev/null | head -n 1); "
        "[ -z \"$c\" ] || docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' \"$c\" | "
        "sed -n 's/^AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=.*@\\([^:/@]*\\):[0-9]*\\/.*/\\1/p'; true")
    url = rel.database_url("etl", "p@ss:w/rd\"$`", "meta", "10.110.0.9").replace("postgresql:", "postgresql+psycopg2:")
    lines = f"PATH=/usr/bin\nAIRFLOW__CORE__SQL=x@1.2.3.4:5/y\nAIRFLOW__DATABASE__SQL_ALCHEMY_CONN={url}\nZ=1\n"
    sed = subprocess.run(["sh", "-c", rel.url_host_sed(af_db.CONN, "")], input=lines, capture_output=True, text=True)
    assert sed.stdout == "10.110.0.9\n"


def test_where_names_the_host_of_a_database_server():
    addresses = {"pipelines": "10.0.0.2", "pg": "10.0.0.3"}
    assert af_db.where("host.docker.internal", "pipelines", addresses) == ("pipelines", "PostgreSQL on pipelines")
    assert af_db.where("10.0.0.3", "pipelines", addresses) == ("pg", "PostgreSQL on pg (10.0.0.3)")
    assert af_db.where("10.9.9.9", "pipelines", addresses) == ("", "10.9.9.9")
    assert af_db.reads_from("host.docker.internal", "pipelines", "pipelines", addresses)
    assert af_db.reads_from("10.0.0.3", "pipelines", "pg", addresses)
    assert not af_db.reads_from("10.0.0.3", "pipelines", "pipelines", addresses)
    assert not af_db.reads_from("", "pipelines", "pipelines", addresses)


def test_a_table_count_says_tables_only_when_it_ran_and_counted_some():
    assert af_db.has_tables("12\n", 0)
    assert not af_db.has_tables("0\n", 0)
    assert not af_db.has_tables("", 0)
    assert not af_db.has_tables('psql: error: database "meta" does not exist', 2)
    assert not af_db.has_tables("12\n", 1)


def test_the_refusal_names_both_places_and_the_fix(tmp_path):
    err = af_db.refusal(airflow_env(tmp_path), "pipelines", "meta", "host.docker.internal", "10.0.0.3",
                        {"pipelines": "10.0.0.2", "pg": "10.0.0.3"})
    assert str(err) == (
        "pipelines: airflow database move: Airflow's database meta moves from PostgreSQL on pipelines (where "
        "Airflow reads it now) to PostgreSQL on pg (10.0.0.3), where it has no tables: Airflow would start there "
        "without its run history, connections and variables; its services were left running as they were (fix: "
        "copy it first with `invoke db.copy --env e --from pipelines` (it stops Airflow while it copies), then "
        "run provision again; or run it with --empty-database to start Airflow on an empty database)")
