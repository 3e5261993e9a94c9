"""Invoke tasks: parse arguments, call one workflow, print its report. No logic of their own.

Workflows are imported inside each task so `invoke --list` and every command start fast.
User mistakes and remote failures end as one ``error: ...`` line and exit code 1.
"""
from __future__ import annotations

import os
import sys
import threading

from invoke import Collection, Exit, task

from .cli_shared import environment, inventory_path, print_json, required, split_names, user_errors
from .errors import DropshipError
from .transport.pool import PARALLEL


def parallel(c) -> int:
    return int(c.config.get("dropship", {}).get("parallel", PARALLEL))


def _progress(as_json: bool = False):
    from .report import ConsoleProgress

    return ConsoleProgress(sys.stderr if as_json else sys.stdout)


# --- inventory ---------------------------------------------------------------------------------

@task(help={"env": "environment to check (default: all)"})
@user_errors
def check(c, env=None):
    """Validate the inventory and print the resolved environment (secrets masked)."""
    from .inventory import load_inventory
    from .inventory_view import describe

    envs = load_inventory(inventory_path(c))
    if env and env not in envs:
        raise DropshipError(f"no environment '{env}' in {inventory_path(c)}", f"use one of: {', '.join(envs)}")
    for name in [env] if env else list(envs):
        print(describe(envs[name]))
    print(f"inventory ok: {inventory_path(c)}")


# --- droplets ----------------------------------------------------------------------------------

@task(help={"env": "environment", "hosts": "comma-separated host names (default: all)"})
@user_errors
@required("env")
def create(c, env=None, hosts=None):
    """Create the environment's droplets (idempotent), generate its SSH key, pin host keys."""
    from .hosts import select
    from .workflows.droplets import create as create_droplets

    e = environment(c, env)
    created = create_droplets(e, select(e, split_names(hosts)), _progress(), parallel(c))
    _print_droplets(created)


@task(name="list", help={"env": "environment", "json": "print JSON"})
@user_errors
@required("env")
def list_(c, env=None, json=False):
    """List the environment's droplets as the provider sees them."""
    from .workflows.droplets import leftovers, list_droplets

    e = environment(c, env)
    droplets = list_droplets(e)
    sizes = {h.name: h.droplet.size for h in e.hosts if h.droplet is not None}
    left = leftovers(e, droplets)
    if json:
        print_json([{**d.to_dict(), "inventory_size": sizes.get(d.name), "in_inventory": d.name not in left}
                    for d in droplets])
    else:
        _print_droplets(droplets, sizes)
        for name in left:
            print(f"{name}: not in the inventory (destroy it with `invoke droplet.destroy --env {e.name} "
                  f"--hosts {name}`, or list it in the inventory again)")


@task(help={"env": "environment", "hosts": "comma-separated host names, or droplets no longer in the inventory "
            "(default: all, those too)", "yes": "do not ask for confirmation"})
@user_errors
@required("env")
def destroy(c, env=None, hosts=None, yes=False):
    """Destroy the environment's droplets (and their data), also those no longer in the inventory."""
    from .workflows.droplets import destroy as destroy_droplets
    from .workflows.droplets import destroy_plan, leftovers, list_droplets, served_by_lb

    e = environment(c, env)
    chosen = destroy_plan(e, split_names(hosts), leftovers(e, list_droplets(e))
                          if any(h.droplet is not None for h in e.hosts) else [])
    if hosts:
        served_by_lb(e, chosen)
    if not yes and e.provider != "local":
        _confirm(f"Destroy {', '.join(chosen)} in {env}? Type the environment name: ", env)
    destroy_droplets(e, chosen, _progress())


@task(help={"env": "environment", "size": "a size not in the inventory, e.g. s-2vcpu-4gb (say which line to update)",
            "hosts": "comma-separated host names (default: every droplet whose size differs from the inventory)",
            "no_snapshot": "skip the snapshot taken first", "disk": "also grow the disk (permanent: it can never "
            "shrink back)", "yes": "do not ask for confirmation", "dry_run": "print the plan; change nothing",
            "json": "print one JSON object (progress goes to stderr)"})
@user_errors
@required("env")
def resize(c, env=None, size=None, hosts=None, no_snapshot=False, disk=False, yes=False, dry_run=False,
           json=False):
    """Resize droplets to their inventory size: snapshot, stop, resize, boot, retune, health gates, downtime."""
    from .report import emit
    from .workflows.resize import ResizeOptions, resize as resize_droplets

    e = environment(c, env)
    if disk and not dry_run and not yes:
        if e.name == "production" or not (sys.stdin.isatty() or in_ci()):
            raise DropshipError("--disk is permanent (a disk never shrinks, so no smaller size fits afterwards)",
                                "pass --yes once you are sure")
        _confirm(f"--disk grows the disk of {env}'s droplets for good. Type the environment name: ", env)
    options = ResizeOptions(size=size, hosts=split_names(hosts), snapshot=not no_snapshot, disk=disk, dry_run=dry_run)
    progress = _progress(json)
    report = resize_droplets(e, options, progress)
    emit(report, json, progress)
    if size and report.ok and not dry_run:
        from .inventory_view import size_line

        for name in report.extra.get("plan", {}):
            print(f"{name} is now {size}: update {size_line(e, name)} to keep the inventory the source of truth",
                  file=sys.stderr if json else sys.stdout)
    if not report.ok:
        raise Exit(code=1)


@task(help={"env": "environment", "host": "droplet to snapshot", "name": "snapshot name"})
@user_errors
@required("env", "host", "name")
def snapshot(c, env=None, host=None, name=None):
    """Snapshot a droplet (local: an image; DigitalOcean: a droplet snapshot); usable as `image:`."""
    from .workflows.droplets import provider_for

    from .hosts import select

    e = environment(c, env)
    select(e, (host,))
    print(provider_for(e).snapshot(host, name))


@task(name="forget-key", help={"env": "environment", "host": "host whose pinned key to drop"})
@user_errors
@required("env", "host")
def forget_key(c, env=None, host=None):
    """Drop a host's pinned SSH key (after a rebuild); the next run needs --accept-new-host-keys."""
    from .workflows.droplets import forget_key as forget

    forget(environment(c, env), host)
    print(f"{host}: pinned host key removed")


def _print_droplets(droplets, inventory_sizes: dict[str, str] | None = None) -> None:
    if not droplets:
        print("no droplets")
        return
    print(f"{'NAME':<20} {'STATUS':<8} {'SSH':<22} {'SIZE':<14} {'REGION':<8} HTTP")
    for d in droplets:
        http = f"http://{d.address}:{d.port(80)}/" if d.port(80) != 80 else f"http://{d.address}/"
        print(f"{d.name:<20} {d.status:<8} {d.address + ':' + str(d.ssh_port):<22} {d.size:<14} {d.region:<8} {http}")
    for d in droplets:
        want = inventory_sizes.get(d.name) if inventory_sizes else None
        if want and want != d.size:
            print(f"{d.name}: the inventory says {want}, the droplet is {d.size} "
                  f"(run `invoke droplet.resize --hosts {d.name}`, or update the inventory)")


def in_ci() -> bool:
    """CI=true (as CI services set it): tasks run without prompts, as with --yes."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _confirm(prompt: str, expected: str) -> None:
    if in_ci():
        return
    if not sys.stdin.isatty():
        raise DropshipError("refusing without confirmation (no terminal to ask on)", "pass --yes")
    if input(prompt).strip() != expected:
        raise DropshipError("not confirmed", "type the environment name, or pass --yes")


# --- provision ---------------------------------------------------------------------------------

@task(name="provision", help={
    "env": "environment", "dry_run": "show the plan and diffs; change nothing",
    "json": "print one JSON object (progress goes to stderr)", "roles": "comma-separated roles to run",
    "hosts": "comma-separated host names", "accept_new_host_keys": "pin unknown host keys on first contact",
    "purge": "also delete the data (databases, releases, users) of apps and Airflow no longer in the inventory",
    "empty_database": "go on where Airflow's database moved to a host that has none of its tables (Airflow "
                      "starts there with no run history)",
})
@user_errors
@required("env")
def provision_task(c, env=None, dry_run=False, json=False, roles=None, hosts=None, accept_new_host_keys=False,
                   purge=False, empty_database=False):
    """Bring hosts to the state of their roles (base, postgres, docker, nginx); idempotent."""
    from .report import emit
    from .workflows.provision import ProvisionOptions, provision

    progress = _progress(json)
    report = provision(environment(c, env), ProvisionOptions(
        dry_run=dry_run, roles=split_names(roles), hosts=split_names(hosts),
        accept_new_host_keys=accept_new_host_keys, parallel=parallel(c), purge=purge,
        empty_database=empty_database), progress)
    emit(report, json, progress)
    if not report.ok:
        raise Exit(code=1)


# --- releases ----------------------------------------------------------------------------------

@task(name="deploy", help={"env": "environment", "ref": "git ref of the apps' source to ship (default: the work tree)",
                           "json": "print one JSON object (progress goes to stderr)",
                           "hosts": "comma-separated host names",
                           "only": "app (every app), an app's name, or airflow (the DAGs)",
                           "lock_wait": "seconds to wait for another deploy's lock (default: refuse at once)",
                           "empty_database": "go on where an app's or Airflow's database moved to a host that "
                                             "has none of its tables (default: refuse)"})
@user_errors
@required("env")
def deploy_task(c, env=None, ref=None, json=False, hosts=None, only=None, lock_wait=0, empty_database=False):
    """Ship the apps (zero downtime, health-gated) and the Airflow DAGs (import-checked) as releases."""
    from .report import emit
    from .workflows.deploy import DeployOptions, deploy

    progress = _progress(json)
    report = deploy(environment(c, env), DeployOptions(ref=ref, hosts=split_names(hosts), parallel=parallel(c),
                                                       only=only, lock_wait=_seconds(lock_wait),
                                                       empty_database=empty_database), progress)
    emit(report, json, progress)
    if not report.ok:
        raise Exit(code=1)


def _seconds(value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise DropshipError(f"--lock-wait {value!r} is not a number of seconds", "pass e.g. --lock-wait 120") from None
    if not 0 <= seconds <= 86400:
        raise DropshipError(f"--lock-wait {value} is out of range", "pass 0 to 86400 seconds")
    return seconds


@task(name="rollback", help={"env": "environment", "to": "release id (default: the previous, still warm)",
                             "json": "print one JSON object", "hosts": "comma-separated host names",
                             "app": "only this app (or airflow: only the DAGs)",
                             "with_db": "put the app database back too (asks first; a safety dump is taken)",
                             "db_method": "dump or downgrade (default: the dump taken when leaving the release, "
                                          "else the migration downgrade)",
                             "yes": "do not ask for confirmation (--with-db)"})
@user_errors
@required("env")
def rollback_task(c, env=None, to=None, json=False, hosts=None, app=None, with_db=False, db_method=None,
                  yes=False):
    """Switch back to the previous release (instant), or to any retained one with --to."""
    from .report import emit
    from .workflows.deploy import rollback

    e = environment(c, env)
    if db_method and not with_db:
        raise DropshipError("--db-method goes with --with-db", "add --with-db")
    confirm = None
    if with_db and not (yes or in_ci()):
        if not sys.stdin.isatty():
            raise DropshipError("rollback --with-db: refusing without confirmation (no terminal to ask on; "
                                "nothing was touched)", "pass --yes")
        lock = threading.Lock()

        def confirm(message: str) -> None:
            with lock:
                _confirm(f"{message}\nType the environment name to go on: ", env)

    progress = _progress(json)
    report = rollback(e, to, split_names(hosts), progress, parallel(c), app_name=app, with_db=with_db,
                      db_method=db_method, confirm=confirm)
    emit(report, json, progress)
    if not report.ok:
        raise Exit(code=1)


@task(name="releases", help={"env": "environment", "json": "print JSON", "app": "only this app"})
@user_errors
@required("env")
def releases_task(c, env=None, json=False, app=None):
    """Retained releases per host and app: which is live, which is warm, who deployed them and when."""
    from .workflows.deploy import releases

    found = releases(environment(c, env), None, app_name=app)
    if json:
        return print_json(found)
    for host, rows in found.items():
        print(f"{host}:")
        for r in rows:
            mark = "live" if r["live"] else ("warm" if r["warm"] else "")
            db = "  ".join(x for x in (r["db_revision"] and f"db {r['db_revision']}",
                                       r["db_dump"] and f"dump {r['db_dump']}") if x)
            print(f"  {r['app']:<16} {r['id']:<32} {mark:<5} {r['at']:<21} {r['by']}" + (f"  {db}" if db else ""))


@task(name="unlock", help={"env": "environment", "force": "even while its holder still runs a step",
                           "app": "only this app's lock (or airflow)"})
@user_errors
@required("env")
def unlock_task(c, env=None, force=False, app=None):
    """Release a stale deploy lock (left by a deploy that was killed)."""
    from .workflows.deploy import unlock

    report = unlock(environment(c, env), None, force, app_name=app)
    for host, outcome in report.hosts.items():
        print(f"error: {outcome.error}" if outcome.failed else f"{host}: deploy lock released")
    if not report.ok:
        raise Exit(code=1)


def _say(e):
    """``print`` through the environment's redactor (remote output may echo a secret); JSON for non-strings."""
    import json as _json

    from .secrets import redactor_for

    redact = redactor_for(e)
    return lambda value="": print(redact(value if isinstance(value, str) else _json.dumps(value)))


@task(help={"env": "environment", "app": "only this app's database (default: every app's)",
            "offsite": "run the scheduled backup now: every database, encrypted, kept on the host and uploaded"})
@user_errors
@required("env")
def backup(c, env=None, app=None, offsite=False):
    """pg_dump the apps' databases now (--offsite: the scheduled, encrypted backup of every database)."""
    e = environment(c, env)
    if offsite:
        if app:
            raise DropshipError("db.backup: --offsite backs up every database; --app does not apply",
                                "drop --app, or drop --offsite for a dump of that app's database")
        from .workflows.backups import run_now

        return run_now(e, on_line=_say(e))
    from .workflows.database import backup as run_backup

    run_backup(e, app, on_line=_say(e))


@task(help={"env": "environment", "app": "only this app's database (default: every app's)", "json": "print JSON"})
@user_errors
@required("env")
def backups(c, env=None, app=None, json=False):
    """List the apps' database dumps and, with backups: configured, the scheduled ones (host and off-site)."""
    from .workflows.database import backups as list_backups

    e = environment(c, env)
    say, rows = _say(e), list_backups(e, app)
    scheduled = None
    if e.settings.backups:
        from .workflows.backups import listing

        scheduled = listing(e)
    if json:
        return say({"dumps": rows, "scheduled": scheduled} if scheduled else rows)
    several = len({r["database"] for r in rows}) > 1
    for r in rows:
        say((f"{r['database']:<16} " if several else "") + f"{r['name']:<48} {r['bytes']:>10} bytes  {r['at']}")
    if not rows:
        say("no backups")
    if scheduled:
        from .cli_ops import scheduled_lines

        for line in scheduled_lines(scheduled):
            say(line)


@task(help={"env": "environment", "file": "backup name (see db.backups) or a local dump file",
            "app": "the app whose database --file replaces (needed when several apps have one)",
            "from": "a scheduled backup: offsite:LATEST, offsite:<stamp> or host:<stamp>",
            "yes": "do not ask for confirmation"})
@user_errors
@required("env")
def restore(c, env=None, file=None, app=None, yes=False, from_=None):
    """Restore an app database from a dump, or every database from a scheduled backup (replaces their content)."""
    e = environment(c, env)
    if bool(file) == bool(from_):
        raise DropshipError("db.restore: pass one of --file NAME or --from offsite:LATEST", "see `invoke db.backups`")
    if from_ and app:
        raise DropshipError("db.restore: --from restores every database of the set; --app does not apply",
                            "drop --app, or restore one dump with --file NAME --app APP")
    if from_:
        from .workflows.backups import restore as restore_set

        ask = None if yes else lambda stamp, what: _confirm(f"Replace {what} of {env} with backup {stamp}? "
                                                            "Type the environment name: ", env)
        stamp = restore_set(e, from_, ask, on_line=_say(e))
        return _say(e)(f"restored backup {stamp} (safety dumps: pre-restore-*.dump in `invoke db.backups`)")
    from .workflows.database import restore as run_restore

    confirm = None if yes else lambda database: _confirm(f"Replace database {database} of {env} with {file}? "
                                                         "Type the environment name: ", env)
    _say(e)(f"restored from {run_restore(e, file, confirm, app)}")


@task(name="copy", help={"env": "environment", "from": "the host whose PostgreSQL holds the databases now (the "
                                                     "postgres role's previous host)",
                         "yes": "do not ask for confirmation"})
@user_errors
@required("env")
def copy_databases(c, env=None, from_=None, yes=False):
    """Copy the apps' and Airflow's databases from another host's PostgreSQL into the postgres host (replaces them)."""
    from .workflows.db_copy import copy

    e = environment(c, env)
    if not from_:
        raise DropshipError("db.copy: pass --from HOST, the host the databases are on now", "e.g. --from web-1")
    ask = None if yes else lambda what: _confirm(f"Replace {what}? Type the environment name: ", env)
    copy(e, from_, ask, on_line=_say(e))


# --- airflow ---------------------------------------------------------------------------------------

@task(name="status", help={"env": "environment", "json": "print JSON"})
@user_errors
@required("env")
def airflow_status(c, env=None, json=False):
    """Airflow services: state and health."""
    from .workflows.airflow import status

    e = environment(c, env)
    say, rows = _say(e), status(e)
    if json:
        say(rows)
    else:
        for r in rows:
            say(f"{r['host']:<16} {r['service']:<24} {r['state']:<11} {r['health'] or '-':<10} {r['status']}")
    bad = [r for r in rows if r["state"] != "running" or r["health"] not in ("", "healthy")]
    say(f"recap: {len(rows)} services on {len({r['host'] for r in rows})} host(s), {len(rows) - len(bad)} up, "
        f"{len(bad)} not")
    if bad:
        raise Exit(code=1)


@task(name="dags", help={"env": "environment", "json": "print JSON"})
@user_errors
@required("env")
def airflow_dags(c, env=None, json=False):
    """DAGs with their paused state, and import errors."""
    from .workflows.airflow import dags

    e = environment(c, env)
    say, found = _say(e), dags(e)
    if json:
        return say(found)
    for d in found["dags"]:
        say(f"{d.get('dag_id', ''):<32} {'paused' if str(d.get('is_paused')).lower() == 'true' else 'active':<7} "
            f"{d.get('fileloc', '')}")
    for err in found["import_errors"]:
        say(f"IMPORT ERROR {err.get('filepath', '')}: {str(err.get('error', '')).strip().splitlines()[-1:]}")


@task(name="trigger", help={"env": "environment", "dag": "DAG id", "date": "logical date (YYYY-MM-DD)",
                            "conf": "the run's configuration, a JSON object (dag_run.conf, params)",
                            "wait": "wait for the run to finish"})
@user_errors
@required("env", "dag")
def airflow_trigger(c, env=None, dag=None, date=None, conf=None, wait=False):
    """Trigger a DAG run (optionally at a logical date, with a conf) and optionally wait for it."""
    from .workflows.airflow import trigger

    e = environment(c, env)
    say = _say(e)
    result = trigger(e, dag, date, wait, on_line=say, conf=conf)
    say(result)
    if wait and result != "success":
        raise Exit(code=1)


@task(name="test", help={"env": "environment", "dag": "DAG id", "task": "task id", "date": "logical date",
                         "params": "the task's params, a JSON object (as `airflow tasks test -t`)",
                         "map-index": "one instance of a mapped task (0 for the first)"})
@user_errors
@required("env", "dag", "task", "date")
def airflow_test(c, env=None, dag=None, task=None, date=None, params=None, map_index=None):
    """Run one task in isolation (airflow tasks test), print its log and its state; exit 1 unless it succeeded
    (or skipped). The run it needs is one the scheduler leaves alone, removed afterwards."""
    from .workflows.airflow_task_test import check_map_index, label, run_task_test, summary

    e = environment(c, env)
    say = _say(e)
    index = check_map_index(map_index)
    outcome = run_task_test(e, dag, task, date, on_line=say, params=params, map_index=index)
    say(summary(dag, label(task, index), outcome))
    if not outcome.ok:
        raise Exit(code=1)


@task(name="backfill", help={"env": "environment", "dag": "DAG id", "start": "first date (YYYY-MM-DD)",
                             "end": "last date", "wait": "wait until every run finished"})
@user_errors
@required("env", "dag", "start", "end")
def airflow_backfill(c, env=None, dag=None, start=None, end=None, wait=False):
    """Backfill a DAG over a date range (one run per schedule interval)."""
    from .workflows.airflow import backfill

    e = environment(c, env)
    say = _say(e)
    states = backfill(e, dag, start, end, wait, on_line=say)
    if wait:
        ok = sum(1 for s in states.values() if s == "success")
        say(f"{ok} of {len(states)} runs succeeded")
        if ok != len(states):
            raise Exit(code=1)


@task(name="logs", help={"env": "environment",
                         "service": "apiserver, scheduler, dag-processor, triggerer; worker, flower where they run",
                         "follow": "keep printing new lines"})
@user_errors
@required("env")
def airflow_logs(c, env=None, service=None, follow=False):
    """Logs of the Airflow services."""
    from .workflows.airflow import logs

    e = environment(c, env)
    logs(e, service, follow, on_line=_say(e))


# --- the whole thing on one laptop ----------------------------------------------------------------

@task(help={"env": "environment (default: local)"})
@user_errors
def up(c, env="local"):
    """Create the droplets, provision them, deploy, and print where to open what runs there."""
    from .report import emit
    from .workflows.up import up as bring_up, where_to_open

    e = environment(c, env)
    progress = _progress()
    result = bring_up(e, progress, parallel(c), on_report=lambda report: emit(report, False, progress))
    if not result.ok:
        raise Exit(code=1)
    print()
    for line in where_to_open(e, result.droplets):
        print(line)


def namespace() -> Collection:
    ns = Collection()
    ns.add_collection(Collection("inventory", check))
    ns.add_collection(Collection("droplet", create, list_, destroy, resize, snapshot, forget_key))
    ns.add_task(provision_task)
    ns.add_task(deploy_task)
    ns.add_task(rollback_task)
    ns.add_task(releases_task)
    ns.add_task(unlock_task)
    ns.add_collection(Collection("db", backup, backups, restore, copy_databases))
    ns.add_collection(Collection("airflow", airflow_status, airflow_dags, airflow_trigger, airflow_test,
                                 airflow_backfill, airflow_logs))
    ns.add_task(up)
    from . import cli_ops

    ns.add_task(cli_ops.status)
    ns.add_task(cli_ops.logs)
    ns.add_task(cli_ops.ssh)
    ns.add_task(cli_ops.audit)
    ns.add_collection(Collection("app", cli_ops.app_exec))
    ns.add_collection(Collection("tls", cli_ops.tls_status))
    ns.configure({"dropship": {"inventory": "inventory.yaml", "parallel": PARALLEL}})
    return ns
