"""Deploys to several app hosts sharing a database: one host (the migrating one) first, then the rest."""
from types import SimpleNamespace

from provision.engine.runner import HostOutcome
from provision.report import Report
from provision.workflows import on_hosts


def fake_run(calls: list, failing: set):
    def run(env, hosts, targets, redactor, parallel, work, command, extra=None):
        calls.append([h.name for h in hosts])
        assert [t.name for t in targets] == [h.name for h in hosts]
        report = Report(command, "e", extra=extra or {})
        report.hosts = {h.name: HostOutcome(h.name, failed=int(h.name in failing)) for h in hosts}
        return report
    return run


HOSTS = [SimpleNamespace(name=n) for n in ("web-1", "web-2", "web-3")]


def test_the_lead_runs_alone_then_the_others_together(monkeypatch):
    calls: list = []
    monkeypatch.setattr(on_hosts, "run_on_hosts", fake_run(calls, set()))
    report = on_hosts.lead_then_rest(None, HOSTS, HOSTS, None, 10, None, "deploy", "web-2", {"release": "r1"})
    assert calls == [["web-2"], ["web-1", "web-3"]]
    assert list(report.hosts) == ["web-1", "web-2", "web-3"] and report.extra == {"release": "r1"}
    assert not any(o.failed or o.skipped for o in report.hosts.values())


def test_a_failed_lead_skips_the_others(monkeypatch):
    calls: list = []
    monkeypatch.setattr(on_hosts, "run_on_hosts", fake_run(calls, {"web-1"}))
    report = on_hosts.lead_then_rest(None, HOSTS, HOSTS, None, 10, None, "deploy", "web-1")
    assert calls == [["web-1"]]
    assert report.hosts["web-1"].failed and report.hosts["web-2"].skipped and report.hosts["web-3"].skipped
