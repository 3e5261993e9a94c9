"""Scheduled, encrypted, off-site backups on a droplet of their own (app + Airflow), against a local
S3 server (moto) on the droplet network's gateway: a failed run is visible; the timer's run is
encrypted in the bucket, pruned by retention on the host and in the bucket; then the drill: the
droplet is destroyed, created, provisioned, and `db.restore --from offsite:LATEST` brings the rows and
Airflow's run history back."""
from __future__ import annotations

import base64
import json
import subprocess
import time
from datetime import datetime, timedelta

import pytest

from provision.agekey import new_identity
from provision.providers.local import reap
from tests.integration.conftest import APP_STACK_ROLES, AppStack
from tests.s3server import S3Server
from tests.support import (DEFAULTS, AirflowAPI, AppRepo, Browser, DagRepo, Sandbox, airflow_settings, app_settings,
                           droplet_spec, http_base, last_json, run_name, sandbox_secret)

BUCKET = "dropship-backups"
DAG = "Helloworld"
NAMES = ["Ada", "Grace O'Hara", "Zoë; $(reboot)"]
KEPT, OLD = "20200106T030000Z", "20200105T030000Z"   # sets from long ago: keep_daily 2 keeps the newer one


def _write(box: Sandbox, root, s3: S3Server, bucket: str, schedule: str = "daily") -> None:
    defaults = {**{k: v for k, v in DEFAULTS.items() if k != "app"}, "app": app_settings(root / "names"),
                "airflow": airflow_settings(root / "dags"),
                "backups": {"schedule": schedule, "keep_daily": 2, "keep_weekly": 1,
                            "offsite": {"endpoint": s3.endpoint, "bucket": bucket,
                                        "access_key_id": {"secret": "s3_key_id"},
                                        "secret_access_key": {"secret": "s3_secret_key"}}}}
    defaults["app"]["database"] = DEFAULTS["app"]["database"]
    droplet = droplet_spec("web-1", APP_STACK_ROLES, AppStack.SIZE, warm=True)
    box.write({box.env: {"provider": "local", "droplets": [droplet]}}, defaults)


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    root = tmp_path_factory.mktemp("backups")
    AppRepo.create(root / "names")
    DagRepo.create(root / "dags")
    (root / "env").mkdir()
    box = Sandbox(root / "env", run_name())
    s3 = S3Server(box.env)
    try:
        s3.start(root / "moto.log")
        assert s3.request("PUT", f"/{BUCKET}")[0] == 200
        _write(box, root, s3, "no-such-bucket")           # first: a bucket that does not exist
        box.preload_airflow("web-1")                      # shipping the image is test_airflow_image_build's
        box.create_and_provision()
        yield box, root, s3, AppStack(box)
    finally:
        box.invoke("droplet.destroy", "--env", box.env, "--yes")
        s3.stop()
        reap({"dropship.env": box.env})


def test_failed_backup_is_visible_in_status_backups_and_journal(drill):
    box, _, _, stack = drill
    proc = box.invoke("db.backup", "--env", box.env, "--offsite")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "error: web-1: backup" in proc.stderr and "journalctl -u dropship-backup.service" in proc.stderr
    status = last_json(box.invoke("status", "--env", box.env, "--json", check=True))
    failure = status["web-1"]["scheduled_backups"]["last_failure"]
    assert failure["result"] == "exit-code" and failure["step"].startswith("upload "), failure
    assert status["web-1"]["scheduled_backups"]["last_success"] is None
    listed = box.invoke("db.backups", "--env", box.env, check=True).stdout
    assert "scheduled backup LAST FAILURE" in listed and "at step 'upload " in listed, listed
    journal = stack.ssh("journalctl -u dropship-backup.service --no-pager -o cat")
    assert "Failed with result 'exit-code'" in journal or "failed" in journal.lower(), journal
    assert "NoSuchBucket" in journal or "bucket" in journal.lower(), journal


def test_timer_backup_is_encrypted_off_site_pruned_and_restores_on_a_new_droplet(drill):
    box, root, s3, stack = drill
    # the app's rows through its form, an Airflow run recorded
    assert box.invoke("deploy", "--env", box.env, "--json", timeout=1800).returncode == 0
    browser = Browser(http_base(box))
    for name in NAMES:
        browser.add_name(name)
    assert box.invoke("airflow.trigger", "--env", box.env, "--dag", DAG, "--wait", timeout=900).returncode == 0
    api = AirflowAPI.of(box)
    runs_before = sorted(r["dag_run_id"] for r in api.get(f"/api/v2/dags/{DAG}/dagRuns")["dag_runs"])
    rows_before = stack.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1'")
    assert all(n in rows_before for n in NAMES)

    # old sets on the host and in the bucket, for retention to remove
    for stamp in (KEPT, OLD):
        stack.ssh(f"mkdir -p /var/backups/dropship/scheduled/{stamp} && "
                  f"echo old > /var/backups/dropship/scheduled/{stamp}/names.dump.age")
        assert s3.request("PUT", f"/{BUCKET}/{box.env}/{stamp}/names.dump.age", b"old")[0] == 200

    # the schedule: 20 s from now on the host's clock (the provision below takes a few); the timer starts the unit
    now = datetime.strptime(stack.ssh("date -u +%Y%m%d%H%M%S").strip(), "%Y%m%d%H%M%S")
    at = (now + timedelta(seconds=20)).strftime("*-*-* %H:%M:%S")
    _write(box, root, s3, BUCKET, schedule=at)
    report, proc = box.provision_json("--roles", "postgres")
    assert report["ok"], proc.stdout[-2000:] + proc.stderr[-3000:]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if "last-success" in stack.ssh("ls /var/lib/dropship/backup/"):
            break
        time.sleep(3)
    shown = stack.ssh("date -d \"$(systemctl show -P LastTriggerUSec dropship-backup.timer)\" +%s; "
                      "date -d \"$(systemctl show -P ExecMainStartTimestamp dropship-backup.service)\" +%s; "
                      "journalctl -u dropship-backup.service --no-pager -o cat")
    trigger, started = (int(x) for x in shown.splitlines()[:2])
    assert trigger > 0 and 0 <= started - trigger <= 5, shown           # the timer started it
    assert "dropship-backup: upload" in shown and " done" in shown, shown

    # (2) off-site: the new set, encrypted, unreadable without the identity; the oldest set pruned
    keys = s3.keys(BUCKET, box.env + "/")
    [stamp] = {k.split("/")[1] for k in keys} - {KEPT}
    assert sorted(keys) == [f"{box.env}/{KEPT}/names.dump.age", f"{box.env}/{stamp}/airflow.dump.age",
                            f"{box.env}/{stamp}/names.dump.age"], keys
    # the object as stored in moto (read with the host's S3 credentials: moto refuses anonymous reads)
    blob = base64.b64decode(stack.ssh(f"rclone --config /etc/dropship/backup/rclone.conf cat "
                                      f"offsite:{BUCKET}/{box.env}/{stamp}/names.dump.age | base64 -w0; echo"))
    assert blob.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in blob and b"Grace" not in blob
    wrong, right = root / "wrong-identity", root / "identity"
    wrong.write_text(new_identity() + "\n")
    right.write_text(sandbox_secret(box, "backup_age_identity") + "\n")
    assert subprocess.run(["age", "-d", "-i", str(wrong)], input=blob, capture_output=True).returncode != 0
    assert subprocess.run(["age", "-d", "-i", str(right)], input=blob, capture_output=True).stdout[:5] == b"PGDMP"
    assert stack.ssh("grep -rl AGE-SECRET-KEY /etc /var/lib/dropship /usr/local | wc -l").strip() == "0"
    assert stack.ssh("ls /var/backups/dropship/scheduled/").split() == [KEPT, stamp]
    assert f"removed {OLD}" in shown and f"removed offsite:{BUCKET}/{box.env}/{OLD}" in shown, shown
    listed = json.loads(box.invoke("db.backups", "--env", box.env, "--json", check=True).stdout.splitlines()[-1])
    sched = listed["scheduled"]
    assert [(r["where"], r["stamp"]) for r in sched["backups"]] == [("host", KEPT), ("host", stamp),
                                                                    ("offsite", KEPT), ("offsite", stamp)]
    assert sched["last_success"]["step"] == f"done {stamp}"

    # (3) the droplet is gone; a new one, provisioned, restored from the bucket
    box.invoke("droplet.destroy", "--env", box.env, "--yes", check=True)
    box.preload_airflow("web-1")
    box.create_and_provision()
    proc = box.invoke("db.restore", "--env", box.env, "--from", "offsite:LATEST", timeout=1800, env={"CI": ""})
    assert proc.returncode != 0 and "confirmation" in proc.stderr            # asks first
    proc = box.invoke("db.restore", "--env", box.env, "--from", "offsite:LATEST", "--yes", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"restored backup {stamp}" in proc.stdout and "safety dump of names" in proc.stdout

    # (4) the same rows, Airflow's run history back (db.restore returns once Airflow is healthy)
    assert stack.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1'") == rows_before
    api = AirflowAPI.of(box)
    deadline = time.monotonic() + 300
    runs = []
    while time.monotonic() < deadline:
        status, body = api.call("GET", f"/api/v2/dags/{DAG}/dagRuns", token=api.token(refresh=True))
        runs = sorted(r["dag_run_id"] for r in body.get("dag_runs", [])) if status == 200 else []
        if runs == runs_before:
            break
        time.sleep(3)
    assert runs == runs_before and runs


def test_restore_from_a_set_kept_on_the_host(drill):
    """``db.backup --offsite`` runs the scheduled backup now; ``--from host:STAMP`` restores that set."""
    box, _, _, stack = drill
    assert box.invoke("deploy", "--env", box.env, timeout=1800).returncode == 0     # the new droplet's app
    proc = box.invoke("db.backup", "--env", box.env, "--offsite", timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    listed = json.loads(box.invoke("db.backups", "--env", box.env, "--json", check=True).stdout.splitlines()[-1])
    stamp = max(r["stamp"] for r in listed["scheduled"]["backups"] if r["where"] == "host")
    rows = stack.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1'")
    Browser(http_base(box)).add_name("Added after the backup")
    assert "Added after the backup" in stack.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name'")
    proc = box.invoke("db.restore", "--env", box.env, "--from", f"host:{stamp}", "--yes", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"restored backup {stamp}" in proc.stdout, proc.stdout
    assert stack.ssh("runuser -u postgres -- psql -d names -Atc 'select * from name order by 1'") == rows
