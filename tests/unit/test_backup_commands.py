"""Backups: retention selection, age keys, inventory `backups:` validation, the host's files (exact)."""
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from provision import agekey
from provision.engine.files import File
from provision.errors import DropshipError, InventoryError
from provision.inventory import load_inventory
from provision.retention import keep, to_delete
from provision.roles import backups as backup_role
from provision import files_archive as fa
from test_templates import BACKUP_SECRETS, BACKUPS, context, file_at, several_apps, with_airflow, with_backups

# --- retention --------------------------------------------------------------------------------------


def test_keep_daily_keeps_the_newest_of_each_recent_day():
    stamps = ["20261201T010000Z", "20261201T230000Z", "20261202T030000Z", "20261203T030000Z", "20261204T030000Z"]
    assert keep(stamps, keep_daily=2, keep_weekly=0) == {"20261204T030000Z", "20261203T030000Z"}
    assert to_delete(stamps, 3, 0) == ["20261201T010000Z", "20261201T230000Z"]


def test_keep_weekly_keeps_the_newest_of_each_iso_week():
    # 2026-11-16 (Mon) … 2026-12-04 (Fri): weeks 47, 48, 49
    stamps = ["20261116T030000Z", "20261122T030000Z", "20261123T030000Z", "20261129T030000Z",
              "20261130T030000Z", "20261204T030000Z"]
    assert keep(stamps, keep_daily=1, keep_weekly=2) == {"20261204T030000Z", "20261129T030000Z"}
    assert keep(stamps, keep_daily=1, keep_weekly=3) == {"20261204T030000Z", "20261129T030000Z", "20261122T030000Z"}


def test_retention_never_deletes_what_it_did_not_name():
    odd = ["manual-1.dump", "lost+found", "20261399T000000Z", ".20261204T030000Z"]
    assert to_delete(odd + ["20261201T000000Z", "20261202T000000Z"], 1, 0) == ["20261201T000000Z"]


def test_retention_on_the_host_is_the_same_file(tmp_path):
    out = subprocess.run(["python3", str(Path(backup_role.__file__).parents[1] / "retention.py"), "1", "1"],
                         input="20261201T000000Z\n20261202T000000Z\nother\n", capture_output=True, text=True)
    assert out.stdout == "20261201T000000Z\n"


# --- age keys ---------------------------------------------------------------------------------------


def test_identity_and_recipient_match_age_keygen():
    identity = agekey.new_identity()
    assert identity.startswith("AGE-SECRET-KEY-1") and len(identity) == 74
    assert agekey.RECIPIENT.match(agekey.recipient_of(identity))
    if shutil.which("age-keygen"):      # scripts/setup.sh installs it
        out = subprocess.run(["age-keygen", "-y"], input=identity, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == agekey.recipient_of(identity)


@pytest.mark.parametrize("bad", ["", "AGE-SECRET-KEY-1", "age1qqqq", "token_urlsafe-xyz", "AGE-SECRET-KEY-1Q'$(x)"])
def test_not_an_identity_is_refused(bad):
    with pytest.raises(ValueError):
        agekey.recipient_of(bad)


# --- inventory --------------------------------------------------------------------------------------

BASE = """\
environments:
  local:
    provider: local
    droplets:
      - name: web-1
        size: s-1vcpu-1gb
        roles: [base, postgres]
    backups:
"""


def load(tmp_path, body):
    path = tmp_path / "inventory.yaml"
    path.write_text(BASE + body)
    return load_inventory(path)["local"]


def test_defaults_and_offsite(tmp_path):
    env = load(tmp_path, "      offsite: {endpoint: 'https://fra1.digitaloceanspaces.com', bucket: acme-backups,\n"
                         "                access_key_id: {env: SPACES_KEY}, secret_access_key: {env: SPACES_SECRET}}\n")
    bk = env.settings.backups
    assert (bk.schedule, bk.keep_daily, bk.keep_weekly, bk.identity.name, bk.identity.generate) == \
        ("daily", 7, 4, "backup_age_identity", "age")
    assert (bk.offsite.bucket, bk.offsite.prefix, bk.offsite.region) == ("acme-backups", "local", "us-east-1")
    assert [r.name for r in env.secret_refs()][-3:] == ["backup_age_identity", "SPACES_KEY", "SPACES_SECRET"]


@pytest.mark.parametrize("body,line,key,words", [
    ("      schedule: \"daily; rm -rf /\"\n", 9, "backups.schedule", "not valid"),
    ("      schedule: \"daily\\nOnCalendar=x\"\n", 9, "backups.schedule", "not valid"),
    ("      keep_daily: 0\n", 9, "backups.keep_daily", "integer from 1"),
    ("      keep_weekly: '4'\n", 9, "backups.keep_weekly", "integer"),
    ("      identity: AGE-SECRET-KEY-1XYZ\n", 9, "backups.identity", "never written inline"),
    ("      retention: 3\n", 9, "backups.retention", "unknown key"),
    ("      offsite: {bucket: 'Bad_Bucket', endpoint: 'https://x.example.com', access_key_id: {env: A},"
     " secret_access_key: {env: B}}\n", 9, "backups.offsite.bucket", "not valid"),
    ("      offsite: {bucket: ok-bucket, endpoint: 'https://x.example.com/$(id)', access_key_id: {env: A},"
     " secret_access_key: {env: B}}\n", 9, "backups.offsite.endpoint", "not valid"),
    ("      offsite: {bucket: ok-bucket, endpoint: 'https://x.example.com', prefix: '../etc',"
     " access_key_id: {env: A}, secret_access_key: {env: B}}\n", 9, "backups.offsite.prefix", "not valid"),
    ("      offsite: {bucket: ok-bucket, endpoint: 'https://x.example.com', access_key_id: plain,"
     " secret_access_key: {env: B}}\n", 9, "backups.offsite.access_key_id", "never written inline"),
    ("      offsite: {bucket: ok-bucket, endpoint: 'https://x.example.com', access_key_id: {env: A}}\n",
     9, "backups.offsite.secret_access_key", "missing required"),
])
def test_bad_values_give_one_located_line(tmp_path, body, line, key, words):
    with pytest.raises(InventoryError) as info:
        load(tmp_path, body)
    text = str(info.value)
    assert f"inventory.yaml:{line}:" in text and f"environments.local.{key}" in text and words in text
    assert "\n" not in text.strip()


# --- the host's files -------------------------------------------------------------------------------


def test_backup_files_exact():
    ctx = with_backups(with_airflow(context()))
    res = backup_role.resources(ctx)
    assert file_at(res, "/etc/dropship/backup/backup.env").content.decode() == (
        "# Dropship backups (no secrets here: credentials are in rclone.conf, 0600)\n"
        "DATABASES='names airflow'\nKEEP_DAILY=7\nKEEP_WEEKLY=4\nREMOTE=offsite:dropship-test/local\nFILES=''\n")
    assert file_at(res, "/etc/dropship/backup/recipient").content.decode() == \
        agekey.recipient_of(BACKUP_SECRETS["backup_age_identity"]) + "\n"
    timer = file_at(res, "/etc/systemd/system/dropship-backup.timer")
    assert "OnCalendar=*-*-* 03:15:00\nPersistent=true\n" in timer.content.decode()
    assert timer.check == "systemd-analyze calendar '*-*-* 03:15:00' >/dev/null"
    rclone = file_at(res, "/etc/dropship/backup/rclone.conf")
    assert (rclone.mode, rclone.owner, rclone.secret) == (0o600, "root", True)
    assert "secret_access_key = s3cr3t/+=\n" in rclone.content.decode()
    service = file_at(res, "/etc/systemd/system/dropship-backup.service").content.decode()
    assert "ExecStart=/usr/local/sbin/dropship-backup\nExecStopPost=/usr/local/sbin/dropship-backup --record\n" \
        in service
    # the identity never reaches the host
    assert not any(BACKUP_SECRETS["backup_age_identity"].encode() in r.content for r in res if isinstance(r, File))


def test_the_shared_folders_of_the_apps_this_host_runs_are_in_the_set():
    from dataclasses import replace

    ctx = several_apps(with_backups(context()))
    names, blog, shop = ctx.settings.apps
    apps = (names, replace(blog, shared_dirs=("instance", "media/uploads")), replace(shop, shared_dirs=("uploads",)))
    ctx = replace(ctx, env=replace(ctx.env, settings=replace(ctx.settings, apps=apps)))
    res = backup_role.resources(ctx)
    assert "\nFILES='blog=/srv/blog/data shop=/srv/shop/data'\n" in \
        file_at(res, "/etc/dropship/backup/backup.env").content.decode()
    assert "Description=Dropship backup: encrypted dumps of names, airflow, the shared folders of blog, shop, kept " \
           "here and off-site\n" in file_at(res, "/etc/systemd/system/dropship-backup.service").content.decode()
    script = file_at(res, "/usr/local/sbin/dropship-backup").content.decode()
    assert ('  runuser -u "$app" -- env TMPDIR=/var/tmp python3 /usr/local/lib/dropship/files_archive.py "$dir" \\\n'
            '    | age -R "$conf/recipient" -o "$part/$app.files.tar.age"\n') in script
    assert file_at(res, "/usr/local/lib/dropship/files_archive.py").content == Path(fa.__file__).read_bytes()
    db_only = replace(ctx, host=replace(ctx.host, roles=("base", "postgres")))        # the apps run elsewhere
    assert "\nFILES=''\n" in file_at(backup_role.resources(db_only), "/etc/dropship/backup/backup.env").content.decode()


def test_secret_spanning_lines_is_refused_before_any_host():
    ctx = with_backups(context())
    ctx = type(ctx)(**{**vars(ctx), "secrets": {**ctx.secrets, "S3_SECRET": "a\n[evil]\ntype = local"}})
    with pytest.raises(DropshipError, match="secret_access_key"):
        backup_role.resources(ctx)


def test_identity_that_is_no_age_key_names_the_fix():
    ctx = with_backups(context())
    ctx = type(ctx)(**{**vars(ctx), "secrets": {**ctx.secrets, "backup_age_identity": "not-a-key"}})
    with pytest.raises(DropshipError, match="age-keygen"):
        backup_role.resources(ctx)


def test_without_offsite_no_credentials_file():
    from dataclasses import replace

    from provision.engine.files import Absent

    res = backup_role.resources(with_backups(context(), replace(BACKUPS, offsite=None)))
    assert any(isinstance(r, Absent) and r.path == "/etc/dropship/backup/rclone.conf" for r in res)
    assert "REMOTE=''\n" in file_at(res, "/etc/dropship/backup/backup.env").content.decode()


# --- commands and their output (workflows/backups.py) ---------------------------------------------

from provision.workflows import backups as wf  # noqa: E402
from provision.cli_ops import run_lines, scheduled_lines  # noqa: E402
from provision.workflows.operations import parse_status, status_command  # noqa: E402


def test_run_command_starts_the_unit_the_timer_starts():
    assert wf.run_command() == (
        "t=$(date +%s); systemctl start dropship-backup.service; rc=$?\n"
        "journalctl -u dropship-backup.service --since \"@$t\" -o cat --no-pager | grep -v '^$' | tail -n 40\n"
        "exit $rc")


def test_records_and_list_commands():
    records = ('for f in last-success last-failure; do [ -s /var/lib/dropship/backup/$f ] && '
               'echo "run $f $(cat /var/lib/dropship/backup/$f)"; done\n'
               "ts() { v=$(systemctl show -P \"$1\" dropship-backup.timer 2>/dev/null); case \"$v\" in ''|n/a|0) "
               "echo 0;; *) date -d \"$v\" +%s 2>/dev/null || echo 0;; esac; }\n"
               'echo "timer $(ts LastTriggerUSec) $(ts NextElapseUSecRealtime)"\n')
    assert wf.records_command() == records
    host = ("find /var/backups/dropship/scheduled -mindepth 2 -maxdepth 2 \\( -name '*.dump.age' -o -name "
            "'*.files.tar.age' \\) -printf 'host %h %f %s %T@\\n' 2>/dev/null | "
            "sed 's#^host /var/backups/dropship/scheduled/#host #' | sort\n")
    assert wf.list_command("") == host + records
    assert wf.list_command("offsite:b/p") == host + (
        "printf 'offsite '; rclone --config /etc/dropship/backup/rclone.conf lsjson -R --files-only offsite:b/p "
        "2>&1 | tr -d '\\n'; echo\n") + records


def test_fetch_and_restore_commands_quote_names():
    assert wf.fetch_command("offsite", "offsite:b/p", "20261204T031500Z", "names.dump.age") == \
        "rclone --config /etc/dropship/backup/rclone.conf cat offsite:b/p/20261204T031500Z/names.dump.age"
    assert wf.fetch_command("host", "", "20261204T031500Z", "notes.files.tar.age") == \
        "cat /var/backups/dropship/scheduled/20261204T031500Z/notes.files.tar.age"
    assert wf.pg_restore_command("names", "names") == ("runuser -u postgres -- pg_restore --clean --if-exists "
                                                       "--no-owner --role=names --single-transaction -d names")
    hostile = "x'; rm -rf / #"
    assert wf.pg_restore_command(hostile, hostile).endswith("-d 'x'\"'\"'; rm -rf / #'")


def test_the_restore_prompt_names_what_the_set_replaces():
    assert wf.held_words({"databases": ["names", "airflow"], "files": ["notes", "blog"]}) == \
        "the databases names, airflow and the shared folders of notes, blog"
    assert wf.held_words({"databases": ["names"], "files": []}) == "the database names"


def test_restoring_shared_folders_unpacks_beside_them_then_swaps_and_reloads():
    assert wf.restore_files_command("notes", "/srv/notes/data", ("instance", "media/uploads"),
                                    "pre-restore-20261205T010203Z") == "sh -c " + shlex.quote(
        "rm -rf /srv/notes/data.restoring && install -d -m 0755 /srv/notes/data.restoring && "
        "tar -x -C /srv/notes/data.restoring --no-same-owner && chown -hR notes:notes /srv/notes/data.restoring && "
        "chown root:root /srv/notes/data.restoring || exit 1\n"
        "[ -d /srv/notes/data.restoring/instance ] || install -d -o notes -g notes -m 0750 "
        "/srv/notes/data.restoring/instance || exit 1\n"
        "[ -d /srv/notes/data.restoring/media ] || install -d -o notes -g notes -m 0750 "
        "/srv/notes/data.restoring/media || exit 1\n"
        "[ -d /srv/notes/data.restoring/media/uploads ] || install -d -o notes -g notes -m 0750 "
        "/srv/notes/data.restoring/media/uploads || exit 1\n"
        "if [ -e /srv/notes/data ]; then mv /srv/notes/data /srv/notes/data.pre-restore-20261205T010203Z || exit 1; "
        "echo 'kept the folder it replaces as /srv/notes/data.pre-restore-20261205T010203Z'; fi\n"
        "mv /srv/notes/data.restoring /srv/notes/data || exit 1\n"
        "systemctl try-reload-or-restart notes@blue notes@green")


@pytest.mark.parametrize("source", ["offsite:latest", "offsite:", "s3:LATEST", "host:2026", "offsite:LATEST;id",
                                    "offsite:../20261204T031500Z", "", "offsite:20261204T031500Z\n"])
def test_bad_sources_are_refused_before_any_host(source):
    with pytest.raises(DropshipError, match="offsite:LATEST"):
        wf.parse_source(source)


def test_sources():
    assert wf.parse_source("offsite:LATEST") == ("offsite", "LATEST")
    assert wf.parse_source("host:20261204T031500Z") == ("host", "20261204T031500Z")


NOW = 1_796_353_200          # 2026-12-04T03:00:00Z


def test_parse_list_groups_sets_and_reads_runs():
    out = ("host 20261203T031500Z names.dump.age 1000 1796268900.5\n"
           "host 20261203T031500Z airflow.dump.age 2000 1796268900.5\n"
           "host 20261203T031500Z notes.files.tar.age 500 1796268900.5\nhost 20261203T031500Z x.tmp 9 1796268900.5\n"
           'offsite [{"Path":"20261203T031500Z/names.dump.age","Size":1000},'
           '{"Path":"20261203T031500Z/airflow.dump.age","Size":2000},{"Path":"junk/x","Size":1},'
           '{"Path":"20261203T031500Z/.files.tar.age","Size":1}]\n'
           "run last-success 1796268910 success 0 done_20261203T031500Z\n"
           "run last-failure 1796350000 exit-code 1 upload_20261204T021500Z\n"
           "timer 1796267700 1796355300\n")
    got = wf.parse_list(out, NOW)
    assert got["backups"] == [
        {"where": "host", "stamp": "20261203T031500Z", "databases": ["names", "airflow"], "files": ["notes"],
         "bytes": 3500, "age_s": 85500},
        {"where": "offsite", "stamp": "20261203T031500Z", "databases": ["names", "airflow"], "files": [],
         "bytes": 3000, "age_s": 85500}]
    assert got["last_failure"] == {"at": "2026-12-04T02:06:40Z", "age_s": 3200, "result": "exit-code", "exit": "1",
                                   "step": "upload 20261204T021500Z"}
    assert got["timer"] == {"last_trigger": "2026-12-03T03:15:00Z", "next": "2026-12-04T03:35:00Z"}
    assert run_lines(got)[1] == ("scheduled backup LAST FAILURE: 2026-12-04T02:06:40Z (53m ago), exit-code (exit 1) "
                                 "at step 'upload 20261204T021500Z'; read `journalctl -u dropship-backup.service`")
    assert scheduled_lines({"host": "web-1", **got})[1] == \
        "  host:20261203T031500Z                3500 bytes    23h old  names, airflow, notes files"


def test_unreadable_bucket_is_reported_not_parsed():
    got = wf.parse_list("offsite 2026/12/04 ERROR : : error listing: NoSuchBucket\n", NOW)
    assert got["backups"] == [] and "NoSuchBucket" in got["offsite_error"]


def test_status_asks_for_runs_only_with_backups():
    assert "dropship-backup" not in status_command((), False)
    assert wf.records_command().rstrip("\n") in status_command((), False, backups=True)
    st = parse_status("run last-failure 1796350000 exit-code 1 upload_x\ntimer 0 0\n", NOW)
    assert st["scheduled_backups"]["last_failure"]["step"] == "upload x"
    assert st["scheduled_backups"]["last_success"] is None


def test_without_backups_the_timer_and_credentials_are_retired():
    from provision.engine.files import Absent

    res = backup_role.resources(context())
    assert [r.path for r in res if isinstance(r, Absent)] == [
        "/etc/systemd/system/dropship-backup.timer", "/etc/systemd/system/dropship-backup.service",
        "/etc/dropship/backup/rclone.conf", "/usr/local/sbin/dropship-backup"]
    assert res[0].notify[0].command == ("systemctl stop dropship-backup.timer 2>/dev/null || true\n"
                                        "rm -f /etc/systemd/system/timers.target.wants/dropship-backup.timer\n"
                                        "systemctl daemon-reload\n"
                                        "systemctl reset-failed dropship-backup.timer 2>/dev/null || true")
