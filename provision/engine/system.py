"""System resources: packages (one apt transaction), users, groups, services, timezone, swap, ufw."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .batch import SYSTEMD
from .model import PHASE_PACKAGES, Change, Resource, q

APT_INSTALL = ("apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "
               "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")


@dataclass(frozen=True)
class Packages(Resource):
    """Every package of every role, installed in one apt transaction."""

    names: tuple[str, ...]
    role: str = ""
    phase: int = PHASE_PACKAGES

    @property
    def key(self) -> str:
        return "packages"

    def probe(self, want_content: bool = False) -> str:
        names = " ".join(q(n) for n in self.names)
        return f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null; true"

    def parse(self, output: str) -> set[str]:
        # Status-Abbrev: wanted state, then current state ("ii", "hi" held, "rc" config only, "un").
        return {line.split()[0].split(":")[0] for line in output.splitlines()
                if len(line.split()) >= 2 and line.split()[1][1:2] == "i"}

    def plan(self, installed: set[str]) -> list[Change]:
        missing = [n for n in self.names if n not in installed]
        if not missing:
            return []
        return [self.change("install", f"install {' '.join(missing)}", [
            "export DEBIAN_FRONTEND=noninteractive",
            "apt-get update -q -o DPkg::Lock::Timeout=300",
            f"{APT_INSTALL} {' '.join(q(n) for n in missing)}",
        ])]


@dataclass(frozen=True)
class User(Resource):
    name: str
    shell: str = "/bin/bash"
    home: str = ""              # default: /home/<name>
    system: bool = False        # a service account (no aging, uid below 1000)
    role: str = ""
    phase: int = 2

    @property
    def key(self) -> str:
        return f"user {self.name}"

    def probe(self, want_content: bool = False) -> str:
        return f"getent passwd {q(self.name)} || true"

    def parse(self, output: str) -> dict | None:
        parts = output.strip().split(":")
        return {"home": parts[5], "shell": parts[6]} if len(parts) >= 7 else None

    def plan(self, facts: dict | None) -> list[Change]:
        if facts is None:
            flags = ["--system"] if self.system else ["--create-home"]
            flags += [f"--home-dir {q(self.home)}"] if self.home else []
            return [self.change("create", f"create user {self.name}",
                                [f"useradd {' '.join(flags)} --user-group --shell {q(self.shell)} {q(self.name)}"])]
        if facts["shell"] != self.shell:
            return [self.change("update", f"set shell of {self.name} to {self.shell}",
                                [f"usermod --shell {q(self.shell)} {q(self.name)}"])]
        return []


@dataclass(frozen=True)
class GroupMember(Resource):
    user: str
    group: str
    role: str = ""
    phase: int = 2

    @property
    def key(self) -> str:
        return f"group {self.group} has {self.user}"

    def probe(self, want_content: bool = False) -> str:
        return f"id -nG {q(self.user)} 2>/dev/null || true"

    def parse(self, output: str) -> set[str]:
        return set(output.split())

    def plan(self, groups: set[str]) -> list[Change]:
        if self.group in groups:
            return []
        return [self.change("update", f"add {self.user} to group {self.group}",
                            [f"usermod -aG {q(self.group)} {q(self.user)}"])]


def systemd_word(value: str) -> str:
    """``value`` as one word of a systemd unit's command line (pure): ``%`` and ``$`` doubled (no
    specifier or variable), and double-quoted with C escapes unless it is plain."""
    value = value.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[^\s'\"\\;]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Service(Resource):
    """A systemd unit enabled at boot and running now (``enabled=False``: neither)."""

    name: str
    role: str = ""
    phase: int = 2
    enabled: bool = True

    batch = SYSTEMD

    @property
    def key(self) -> str:
        return f"service {self.name}"

    def batch_item(self, want_content: bool = False) -> str:
        return self.name

    def probe(self, want_content: bool = False) -> str:
        return f"systemctl show -p Id -p LoadState -p UnitFileState -p ActiveState {q(self.name)} 2>/dev/null || true"

    def parse(self, output: str) -> dict:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def plan(self, facts: dict) -> list[Change]:
        enabled = facts.get("UnitFileState") in ("enabled", "static", "alias", "enabled-runtime")
        active = facts.get("ActiveState") == "active"
        if not self.enabled:
            if facts.get("UnitFileState") not in ("enabled", "enabled-runtime") and not active:
                return []
            return [self.change("disable", f"disable and stop {self.name}", [f"systemctl disable --now {q(self.name)}"])]
        if enabled and active:
            return []
        verb = "enable --now" if not enabled else "start"
        what = "enable and start" if not enabled and not active else ("enable" if not enabled else "start")
        return [self.change("start" if not active else "enable", f"{what} {self.name}",
                            [f"systemctl {verb} {q(self.name)}"], service=self.name if not active else "")]


@dataclass(frozen=True)
class Timezone(Resource):
    zone: str
    role: str = ""
    phase: int = 2

    @property
    def key(self) -> str:
        return "timezone"

    def probe(self, want_content: bool = False) -> str:
        return "readlink /etc/localtime || echo; cat /etc/timezone 2>/dev/null || echo"

    def parse(self, output: str) -> tuple[str, str]:
        lines = (output.split("\n") + ["", ""])[:2]
        link = lines[0].strip()
        return (link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else link), lines[1].strip()

    def plan(self, facts: tuple[str, str]) -> list[Change]:
        if facts == (self.zone, self.zone):
            return []
        z = q(self.zone)
        return [self.change("update", f"set timezone to {self.zone}", [
            f"[ -e /usr/share/zoneinfo/{z} ] || {{ echo 'unknown timezone {self.zone}' >&2; exit 1; }}",
            f"ln -sfn /usr/share/zoneinfo/{z} /etc/localtime",
            f"echo {z} > /etc/timezone",
        ])]


@dataclass(frozen=True)
class Swapfile(Resource):
    """``/swapfile`` of ``size_mb``, on at boot; skipped inside containers (swapon fails there)."""

    size_mb: int
    path: str = "/swapfile"
    role: str = ""
    phase: int = 2

    @property
    def key(self) -> str:
        return f"swap {self.path}"

    def probe(self, want_content: bool = False) -> str:
        p = q(self.path)
        # Shell builtins only: containers (the common no-op case) cost no process at all.
        return (f"virt=none; if [ -r /run/systemd/container ]; then read -r virt < /run/systemd/container; "
                f"elif [ -e /.dockerenv ]; then virt=docker; fi; echo virt=$virt; "
                f"if [ $virt = none ]; then echo size=$(stat -c %s {p} 2>/dev/null || echo 0); "
                f"a=0; while read -r name _; do [ \"$name\" = {p} ] && a=1; done < /proc/swaps; echo active=$a; "
                f"f=0; while read -r dev _; do [ \"$dev\" = {p} ] && f=1; done < /etc/fstab; echo fstab=$f; fi")

    def parse(self, output: str) -> dict:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def plan(self, facts: dict) -> list[Change]:
        if facts.get("virt", "none") not in ("none", ""):
            return [self.change("skip", f"swap skipped: containers ({facts['virt']}) cannot swapon", [])]
        if self.size_mb == 0:
            return []
        size_ok = int(facts.get("size") or 0) == self.size_mb * 1024 * 1024
        if size_ok and facts.get("active") == "1" and facts.get("fstab", "0") != "0":
            return []
        p = q(self.path)
        return [self.change("create" if not size_ok else "update", f"swap file {self.path} of {self.size_mb} MB", [
            f"swapoff {p} 2>/dev/null || true",
            *([] if size_ok else [f"rm -f {p}", f"fallocate -l {self.size_mb}M {p} || "
                                               f"dd if=/dev/zero of={p} bs=1M count={self.size_mb}",
                                  f"chmod 600 {p}", f"mkswap {p} >/dev/null"]),
            f"swapon {p}",
            f"grep -q '^{self.path} ' /etc/fstab || echo '{self.path} none swap sw 0 0' >> /etc/fstab",
        ])]


_TUPLE = re.compile(r"^### tuple ### allow (tcp|udp|any) (\d+) (\S+) any (\S+) in")


def ufw_rule_args(rule: str) -> str:
    """"22/tcp" -> "22/tcp"; "5432/tcp from 172.16.0.0/12" -> "proto tcp from 172.16.0.0/12 to any port
    5432"; "... to 172.17.0.1": only to that address of the host."""
    port_proto, _, source = rule.partition(" from ")
    if not source:
        return q(port_proto)
    source, _, dest = source.partition(" to ")
    port, _, proto = port_proto.partition("/")
    return f"proto {q(proto or 'tcp')} from {q(source)} to {q(dest or 'any')} port {q(port)}"


@dataclass(frozen=True)
class Firewall(Resource):
    """ufw: deny inbound by default, allow exactly ``allow`` ("22/tcp", "5432/tcp from 172.16.0.0/12"),
    and those of ``keep`` that it allows already (never added)."""

    allow: tuple[str, ...]
    role: str = ""
    keep: tuple[str, ...] = ()
    phase: int = 2

    @property
    def key(self) -> str:
        return "firewall"

    def probe(self, want_content: bool = False) -> str:
        return ("grep -h '^ENABLED=' /etc/ufw/ufw.conf 2>/dev/null; "
                "grep -h '^DEFAULT_INPUT_POLICY=\\|^DEFAULT_OUTPUT_POLICY=' /etc/default/ufw 2>/dev/null; "
                "grep -h '^### tuple ###' /etc/ufw/user.rules 2>/dev/null; "
                "iptables -w -n -L ufw-user-input >/dev/null 2>&1 && echo LOADED=yes; true")

    def parse(self, output: str) -> dict:
        facts = {"rules": set()}
        for line in output.splitlines():
            m = _TUPLE.match(line)
            if m:
                source = "" if m.group(4) == "0.0.0.0/0" else f" from {m.group(4)}"
                dest = "" if m.group(3) == "0.0.0.0/0" else f" to {m.group(3)}"
                facts["rules"].add(f"{m.group(2)}/{m.group(1)}{source}{dest}")
            elif "=" in line:
                k, v = line.split("=", 1)
                facts[k] = v.strip().strip('"')
        return facts

    def plan(self, facts: dict) -> list[Change]:
        cmds = []
        if facts.get("DEFAULT_INPUT_POLICY") != "DROP":
            cmds.append("ufw default deny incoming")
        if facts.get("DEFAULT_OUTPUT_POLICY") != "ACCEPT":
            cmds.append("ufw default allow outgoing")
        rules = facts["rules"]
        cmds += [f"ufw allow {ufw_rule_args(r)}" for r in self.allow if r not in rules]
        cmds += [f"ufw delete allow {ufw_rule_args(r)}" for r in sorted(rules - set(self.allow) - set(self.keep))]
        if cmds or facts.get("ENABLED") != "yes" or facts.get("LOADED") != "yes":
            cmds.append("ufw --force enable")
        if not cmds:
            return []
        kept = [r for r in self.keep if r in rules and r not in self.allow]
        return [self.change("update", f"firewall: deny inbound, allow {', '.join(self.allow)}"
                            + (f"; still allowing {', '.join(kept)}" if kept else ""),
                            [c + " >/dev/null" for c in cmds])]


@dataclass(frozen=True)
class Download(Resource):
    """A file fetched once over HTTPS (e.g. an apt signing key); kept while it exists."""

    url: str
    path: str
    mode: int = 0o644
    role: str = ""
    phase: int = 2

    @property
    def key(self) -> str:
        return f"download {self.path}"

    def probe(self, want_content: bool = False) -> str:
        return f"test -s {q(self.path)} && echo present || echo absent"

    def parse(self, output: str) -> bool:
        return output.strip() == "present"

    def plan(self, present: bool) -> list[Change]:
        if present:
            return []
        p = q(self.path)
        return [self.change("create", f"download {self.url}", [
            f'tmp=$(mktemp "$(dirname {p})/.dropship.XXXXXX")',
            f'curl -fsSL --retry 3 {q(self.url)} -o "$tmp" || {{ rm -f "$tmp"; exit 1; }}',
            f'chmod {self.mode:04o} "$tmp" && mv -f "$tmp" {p}',
        ])]
