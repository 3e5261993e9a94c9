"""Probes of many resources of one kind in one command, split back per resource (pure).

A host's facts cost processes on the host: one `find` and one `sha256sum` for every managed
path, one `systemctl show` for every unit and one `psql` for every role and database keep a
no-op run cheap even when many hosts share few CPUs.
"""
from __future__ import annotations

from .model import q

STAT, SYSTEMD, PSQL = "stat", "systemd", "psql"
MAX_CONTENT = 256 * 1024
_KINDS = {"f": "regular file", "d": "directory", "l": "symbolic link", "p": "fifo", "s": "socket",
          "c": "character special file", "b": "block special file"}


def script(kind: str, items: list, want_content: bool) -> str:
    if kind == STAT:
        paths = " ".join(q(p) for p, _ in items)
        out = (f"find {paths} -maxdepth 0 -printf '%p\\t%u %g %m %y\\t%l\\n' 2>/dev/null\n"
               f"echo '@@sha'\nsha256sum -- {paths} 2>/dev/null\n")
        wanted = [p for p, content in items if content]
        if want_content and wanted:
            out += (f"echo '@@content'\nfor p in {' '.join(q(p) for p in wanted)}; do "
                    f"if [ -f \"$p\" ] && [ $(stat -c %s \"$p\") -le {MAX_CONTENT} ]; then "
                    f"printf '%s\\t' \"$p\"; base64 -w0 \"$p\"; echo; fi; done\n")
        return out + "true"
    if kind == SYSTEMD:
        return (f"systemctl show -p Id -p LoadState -p UnitFileState -p ActiveState "
                f"{' '.join(q(u) for u in items)} 2>/dev/null; true")
    if kind == PSQL:
        queries = " ".join(f"-c {q(sql)}" for sql in items)
        # The real binary: Debian's /usr/bin/psql is a Perl wrapper that costs ~40 ms of CPU.
        return (f"p=psql; for b in /usr/lib/postgresql/*/bin/psql; do [ -x \"$b\" ] && p=$b; done; "
                f"command -v \"$p\" >/dev/null && PGGSSENCMODE=disable runuser -u postgres -- \"$p\" -X -A -t -q "
                f"{queries} 2>/dev/null; true")
    raise ValueError(kind)


def split(kind: str, output: str, items: list) -> list[str]:
    """One text per item, in the format the resource's own single probe prints."""
    if kind == STAT:
        return _split_stat(output, [p for p, _ in items])
    if kind == SYSTEMD:
        return _split_systemd(output, items)
    return [output] * len(items)


def _split_stat(output: str, paths: list[str]) -> list[str]:
    section, stat, sha, content = "stat", {}, {}, {}
    for line in output.split("\n"):
        if line in ("@@sha", "@@content"):
            section = line[2:]
        elif section == "stat" and line.count("\t") >= 2:
            path, meta, link = line.split("\t", 2)
            owner, group, mode, kind = meta.split(" ")
            stat[path] = f"{owner} {group} {mode} {_KINDS.get(kind, kind)}\n{link}"
        elif section == "sha" and "  " in line:
            digest, path = line.split("  ", 1)
            sha[path] = digest
        elif section == "content" and "\t" in line:
            path, data = line.split("\t", 1)
            content[path] = data
    return [f"{stat[p]}\n{sha.get(p, '')}\n{content.get(p, '')}".rstrip("\n") if p in stat else "absent"
            for p in paths]


def _split_systemd(output: str, units: list[str]) -> list[str]:
    blocks = {}
    for block in output.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in values:
            blocks[values["Id"]] = block
    return [blocks.get(u if "." in u else f"{u}.service", "") for u in units]
