"""``rollback --with-db`` of one app on one host, under its deploy lock: target → database record →
method (the dump taken when leaving the target, else the migration downgrade) → confirmation →
safety dump → restore or downgrade (the live slot keeps serving meanwhile) → start or switch to the
target, health-gated. A failure after the safety dump names it and the command that restores it."""
from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Callable

from .. import db_release
from .. import release as rel
from ..errors import RemoteError
from .database import backup_command, backup_dir, restore_command
from .host_deploy import AppDeploy


def rollback_with_db(deploy: AppDeploy, env_name: str, to: str | None, method: str | None,
                     confirm: Callable[[str], None] | None, said: list[str]) -> str:
    """Roll the app and its database back to ``to``; ``confirm(message)`` may refuse by raising;
    lines for the report are appended to ``said``. Returns the target release."""
    app, lay, name, prefix = deploy.app, deploy.lay, deploy.session.name, deploy.steps.prefix
    if app.database is None:
        raise RemoteError(name, prefix + "rollback --with-db", f"app {app.name} has no database",
                          "roll back without --with-db")
    db, dumps = app.database.name, backup_dir(app.database.name)
    state = deploy.state()
    target = deploy.rollback_target(state, to)
    record = read_record(deploy, lay.release(target))
    template = db_release.downgrade_template(app.release_command, app.db_rollback_command)
    try:
        plan = db_release.choose_method(record, template, method)
    except db_release.NoWayBack as exc:
        raise RemoteError(name, prefix + "rollback --with-db", f"{target}: {exc.reason}", exc.fix) from None
    lost = db_release.lost_writes(db, plan, record)
    how = f"from {plan.dump}" if plan.method == "dump" else f"by downgrade to revision {plan.revision}"
    if confirm:
        confirm(f"{name}: roll {app.name} back to {target} and its database {db} {how}; {lost}.")
    safety = f"rollback-safety-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    deploy.db_step(f"safety dump {safety}.dump", backup_command(db, safety))
    restore = (f"`invoke db.restore --env {env_name} --file {safety}.dump --yes`, then "
               f"`invoke rollback --env {env_name} --app {app.name} --to {state.live_release}`")
    try:
        if plan.method == "dump":
            deploy.db_step(f"restore {db} from {plan.dump}",
                           restore_command(db, app.database.user, f"{dumps}/{plan.dump}"), timeout=3600)
        else:
            live = state.live_release or target
            command = db_release.downgrade_command(template, plan.revision)
            deploy.step(f"downgrade {db} to {plan.revision} ({state.live_release}'s code)",
                        rel.release_command(lay.release(live), lay.user, command), timeout=3600)
        deploy.go_back(state, target, restart=True)
    except RemoteError as exc:
        raise RemoteError(exc.host, exc.step, exc.detail,
                          f"the database may be half way back; safety dump {dumps}/{safety}.dump: {restore}") \
            from None
    said.append(f"{name}: {app.name} at {target}; database {db} back {how} (method {plan.method}); {lost}; "
                f"safety dump {dumps}/{safety}.dump")
    return target


def read_record(deploy: AppDeploy, target_dir: str) -> db_release.DbRecord:
    """The target release's database record: the release's files and the database are read on
    their hosts (one step when they are the same host)."""
    db = deploy.app.database.name
    dumps = backup_dir(db)
    if not deploy.remote_db:
        return db_release.parse_probe(deploy.step("read database record",
                                                  db_release.probe_command(db, target_dir, dumps)))
    kept = db_release.parse_probe(deploy.step("read release record", db_release.release_probe_command(target_dir)))
    now = db_release.parse_probe(deploy.db_step("read database record",
                                                db_release.database_probe_command(db, dumps, kept.left)))
    return replace(kept, dump_at=now.dump_at, current=now.current)
