"""The batched probe and apply scripts, run with /bin/sh, and the parsers of their output."""
import subprocess

import pytest

from provision.engine.files import File
from provision.engine.model import Change, Handler, reload, restart
from provision.engine.script import (
    ApplyEvents, Step, apply_script, apply_steps, marker, parse_probe, plan_handlers, probe_script, read_event,
)

MARK = "@@dropship-test1234"


def sh(script: str) -> str:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30).stdout


def run_apply(steps: list[Step]) -> ApplyEvents:
    events = ApplyEvents()
    for line in sh(apply_script(steps, MARK)).split("\n"):
        read_event(line, MARK, events)
    return events


def test_marker_is_unique_per_call():
    a, b = marker(), marker()
    assert a != b and a.startswith("@@dropship-")


# --- probe script -------------------------------------------------------------------------------

def test_probe_round_trip():
    probes = ["echo one", "echo two; echo 'second line'", "printf 'no newline'", "echo 'keeps  spaces  '"]
    texts = parse_probe(sh(probe_script(probes, MARK)), MARK, len(probes))
    assert texts == ["one", "two\nsecond line", "no newline", "keeps  spaces  "]


def test_probe_that_fails_or_prints_nothing_still_yields_its_text():
    probes = ["echo before; false", "true", "ls /nonexistent-dropship", "echo last"]
    texts = parse_probe(sh(probe_script(probes, MARK)), MARK, len(probes))
    assert texts == ["before", "", "", "last"]


def test_probe_stderr_is_dropped():
    [text] = parse_probe(sh(probe_script(["echo out; echo err >&2"], MARK)), MARK, 1)
    assert text == "out"


def test_dry_run_file_probes_with_content_round_trip(tmp_path):
    # base64 -w0 ends without a newline: the next marker must still start its own line.
    for name in "ab":
        (tmp_path / name).write_text(f"content {name}\n")
    files = [File(str(tmp_path / "a"), b""), File(str(tmp_path / "b"), b""), File(str(tmp_path / "c"), b"")]
    texts = parse_probe(sh(probe_script([f.probe(want_content=True) for f in files], MARK)), MARK, 3)
    facts = [f.parse(t) for f, t in zip(files, texts)]
    assert [f.content for f in facts] == [b"content a\n", b"content b\n", None]
    assert facts[2].exists is False


def test_probe_without_end_marker_is_incomplete():
    output = sh(probe_script(["echo one", "echo two"], MARK))
    with pytest.raises(ValueError):
        parse_probe(output.replace(f"{MARK} END", ""), MARK, 2)


def test_probe_cut_short_is_incomplete():
    output = sh(probe_script(["echo one", "echo two"], MARK))
    with pytest.raises(ValueError):
        parse_probe(output[:output.index(f"{MARK} F 1")], MARK, 2)


def test_probe_with_missing_chunk_is_incomplete():
    with pytest.raises(ValueError):
        parse_probe(f"{MARK} F 0\none\n{MARK} END\n", MARK, 2)


def test_probe_ignores_other_markers():
    output = sh(probe_script(["echo '@@dropship-other F 7'"], MARK))
    assert parse_probe(output, MARK, 1) == ["@@dropship-other F 7"]


# --- apply script -------------------------------------------------------------------------------

def test_apply_runs_every_step_in_order(tmp_path):
    log = tmp_path / "log"
    steps = [Step("one", [f"echo 1 >> {log}"]), Step("two", [f"echo 2 >> {log}", f"echo 3 >> {log}"])]
    events = run_apply(steps)
    assert (events.done, events.failed, events.ended, events.output) == ([0, 1], None, True, [])
    assert log.read_text() == "1\n2\n3\n"


def test_apply_step_output_stays_out_of_the_stream():
    lines = sh(apply_script([Step("noisy", ["echo chatter; echo more >&2"])], MARK)).split("\n")
    assert "chatter" not in lines and "more" not in lines


def test_failing_step_stops_the_script_and_reports_its_output(tmp_path):
    log = tmp_path / "log"
    steps = [
        Step("ok", [f"echo ok >> {log}"]),
        Step("fails", ["echo first-line", *[f"echo line-{i}" for i in range(20)], "echo boom >&2",
                       "exit 3", f"echo never >> {log}"]),
        Step("after", [f"echo after >> {log}"]),
    ]
    events = run_apply(steps)
    assert (events.done, events.failed, events.rc, events.ended) == ([0], 1, 3, False)
    assert log.read_text() == "ok\n"
    assert [line for line in events.output if line][-2:] == ["line-19", "boom"]
    assert "first-line" not in events.output           # only the last 15 lines come back
    assert len([line for line in events.output if line]) == 15


def test_step_stops_at_first_failing_command(tmp_path):
    flag = tmp_path / "flag"
    events = run_apply([Step("set -e", ["false", f"touch {flag}"])])
    assert events.failed == 0 and events.rc == 1
    assert not flag.exists()


def test_steps_read_no_stdin():
    events = run_apply([Step("stdin", ["cat"])])
    assert events.done == [0] and events.ended


def test_apply_of_a_failing_file_write_names_the_cause(tmp_path):
    step = Step("write", File(str(tmp_path / "f"), b"x\n", validate="false %s").write_commands())
    events = run_apply([step])
    assert events.failed == 0
    assert any("validation failed" in line for line in events.output)


def test_read_event():
    events = ApplyEvents()
    assert read_event(f"{MARK} S 0", MARK, events) == ("start", 0)
    assert read_event("noise before a failure", MARK, events) is None
    assert read_event(f"{MARK} D 0", MARK, events) == ("done", 0)
    assert read_event(f"{MARK} X 1 2", MARK, events) == ("failed", 1)
    assert read_event("the error", MARK, events) is None
    assert read_event(f"{MARK} E", MARK, events) is None
    assert (events.done, events.failed, events.rc, events.output) == ([0], 1, 2, ["the error"])
    assert read_event(f"{MARK} END", MARK, events) is None and events.ended


# --- steps and handlers -------------------------------------------------------------------------

def change(summary, notify=(), service="", commands=("true",), role="web"):
    return Change("r", "update", summary, list(commands), notify=tuple(notify), role=role, service=service)


def test_plan_handlers_dedupes_in_order():
    a, b = restart("fail2ban"), reload("nginx", check="nginx -t -q")
    changes = [change("1", [a]), change("2", [b, a]), change("3", [b])]
    assert plan_handlers(changes) == [a, b]


def test_plan_handlers_drops_restart_of_service_started_in_same_phase():
    changes = [change("config", [restart("docker"), restart("fail2ban")]),
               change("start docker", service="docker")]
    assert plan_handlers(changes) == [restart("fail2ban")]


def test_plan_handlers_keeps_the_reload_of_a_change_made_after_the_service_started():
    # nginx's role starts a stopped nginx; a later role's site then needs the reload
    reload_nginx = reload("nginx", check="nginx -t -q")
    changes = [change("nginx conf", [reload_nginx]), change("start nginx", service="nginx"),
               change("airflow location", [reload_nginx], role="airflow")]
    assert plan_handlers(changes) == [reload_nginx]
    assert plan_handlers(changes[:2]) == []


def test_plan_handlers_keeps_handlers_without_service():
    plain = Handler("update ca", "update-ca-certificates")
    assert plan_handlers([change("x", [plain], service="x")]) == [plain]


def test_apply_steps_labels_and_handlers():
    handler = restart("docker")
    changes = [change("write daemon.json", [handler]), change("nothing to run", commands=(), role=""),
               change("noted", role="")]
    steps = apply_steps(changes)
    assert [s.label for s in steps] == ["web: write daemon.json", "noted", "handler: restart docker"]
    assert steps[0].change is changes[0] and steps[-1].change is None
    assert steps[-1].commands == ["systemctl reset-failed docker 2>/dev/null || true\nsystemctl try-restart docker"]


def test_reload_handler_runs_check_first():
    assert reload("nginx", check="nginx -t -q").command == "nginx -t -q && systemctl try-reload-or-restart nginx"


def test_handlers_of_done_changes_run_even_when_a_later_change_fails(tmp_path):
    restarted = tmp_path / "restarted"
    handler = Handler("restart x", f"touch {restarted}")
    changes = [Change("file a", "update", "a", ["true"], notify=(handler,)),
               Change("file b", "update", "b", ["false"])]
    events = run_apply(apply_steps(changes))
    assert events.failed == 1 and not events.ended
    assert restarted.exists()


def test_handlers_of_changes_not_done_do_not_run(tmp_path):
    restarted = tmp_path / "restarted"
    handler = Handler("restart x", f"touch {restarted}")
    events = run_apply(apply_steps([Change("file a", "update", "a", ["false"], notify=(handler,))]))
    assert events.failed == 0 and not restarted.exists()
