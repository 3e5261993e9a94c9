"""File-system resources: files (atomic writes with owner/mode), directories, links, absences."""
from __future__ import annotations

import base64
import difflib
import hashlib
from dataclasses import dataclass

from .batch import STAT
from .model import Change, Handler, Resource, q

MAX_DIFF_BYTES = 256 * 1024


@dataclass(frozen=True)
class FileFacts:
    exists: bool
    owner: str = ""
    group: str = ""
    mode: str = ""
    sha256: str = ""
    content: bytes | None = None
    kind: str = ""         # "regular file", "symbolic link", "directory", ...
    link: str = ""


def _stat_probe(path: str, want_content: bool) -> str:
    p = q(path)
    content = f"; [ -f {p} ] && [ $(stat -c %s {p}) -le {MAX_DIFF_BYTES} ] && base64 -w0 {p}" if want_content else ""
    return (f"if [ -e {p} ] || [ -L {p} ]; then stat -c '%U %G %a %F' {p}; readlink {p} || echo; "
            f"if [ -f {p} ]; then sha256sum < {p} | cut -d' ' -f1; else echo; fi{content}; "
            f"else echo absent; fi")


def _parse_stat(output: str) -> FileFacts:
    lines = output.split("\n")
    if not lines or lines[0].strip() == "absent" or not lines[0].strip():
        return FileFacts(False)
    owner, group, mode, kind = (lines[0].split(" ", 3) + ["", "", "", ""])[:4]
    link = lines[1].strip() if len(lines) > 1 else ""
    sha = lines[2].strip() if len(lines) > 2 else ""
    content = base64.b64decode(lines[3].strip()) if len(lines) > 3 and lines[3].strip() else None
    kind = "regular file" if kind.strip() == "regular empty file" else kind.strip()  # GNU stat on size 0
    return FileFacts(True, owner, group, mode.zfill(4), sha, content, kind, link)


def _mode(mode: int | str) -> str:
    return format(mode, "04o") if isinstance(mode, int) else mode.zfill(4)


@dataclass(frozen=True)
class File(Resource):
    """A file with exact content, owner, group and mode, written atomically.

    ``validate`` checks the new file before it goes live (``%s`` is its temp path, e.g.
    ``visudo -cf %s``); ``check`` runs after it is in place (``nginx -t``) and puts the old file
    back if it fails. ``secret`` files never show their content in diffs.
    """

    path: str
    content: bytes
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    role: str = ""
    notify: tuple[Handler, ...] = ()
    validate: str = ""
    check: str = ""
    secret: bool = False
    replace: bool = True       # False: create when missing, then leave its content alone
    phase: int = 2

    batch = STAT

    @property
    def key(self) -> str:
        return f"file {self.path}"

    def batch_item(self, want_content: bool = False):
        return self.path, want_content and not self.secret

    def probe(self, want_content: bool = False) -> str:
        return _stat_probe(self.path, want_content and not self.secret)

    def parse(self, output: str) -> FileFacts:
        return _parse_stat(output)

    def plan(self, facts: FileFacts) -> list[Change]:
        want_sha = hashlib.sha256(self.content).hexdigest()
        content_differs = facts.sha256 != want_sha and self.replace
        if not facts.exists or facts.kind != "regular file" or content_differs:
            action = "update" if facts.exists else "create"
            return [self.change(action, f"{action} {self.path}", self.write_commands(),
                                diff=self.diff(facts), notify=self.notify)]
        meta = []
        if (facts.owner, facts.group) != (self.owner, self.group):
            meta.append(f"chown {q(self.owner)}:{q(self.group)} {q(self.path)}")
        if facts.mode != _mode(self.mode):
            meta.append(f"chmod {_mode(self.mode)} {q(self.path)}")
        if meta:
            return [self.change("update", f"set owner/mode of {self.path} to {self.owner}:{self.group} "
                                f"{_mode(self.mode)}", meta, notify=self.notify)]
        return []

    def write_commands(self) -> list[str]:
        """Temp file beside the target (same file system), then an atomic rename."""
        p = q(self.path)
        lines = [
            f'tmp=$(mktemp "$(dirname {p})/.dropship.XXXXXX")',
            "base64 -d > \"$tmp\" <<'DROPSHIP_EOF'",
            base64.encodebytes(self.content).decode().rstrip("\n"),
            "DROPSHIP_EOF",
            f'chown {q(self.owner)}:{q(self.group)} "$tmp" && chmod {_mode(self.mode)} "$tmp" '
            f'|| {{ rm -f "$tmp"; exit 1; }}',  # set -e ignores a failure on the left of &&
        ]
        if self.validate:
            lines.append(f'{self.validate.replace("%s", chr(34) + "$tmp" + chr(34))} '
                         f'|| {{ rm -f "$tmp"; echo "validation failed: {self.validate}" >&2; exit 1; }}')
        if self.check:
            lines += [
                f'prev=""; if [ -e {p} ]; then prev="$tmp.prev"; cp -p {p} "$prev"; fi',
                f'mv -f "$tmp" {p}',
                f'if ! {self.check}; then if [ -n "$prev" ]; then mv -f "$prev" {p}; else rm -f {p}; fi; '
                f'echo "check failed, previous file restored: {self.check}" >&2; exit 1; fi',
                '[ -z "$prev" ] || rm -f "$prev"',
            ]
        else:
            lines.append(f'mv -f "$tmp" {p}')
        return ["\n".join(lines)]

    def diff(self, facts: FileFacts) -> str:
        if self.secret:
            return f"--- {self.path}\n+++ {self.path}\n(secret content not shown)\n"
        old = facts.content if facts.content is not None else b""
        try:
            a, b = old.decode().splitlines(True), self.content.decode().splitlines(True)
        except UnicodeDecodeError:
            return f"Binary file {self.path} differs\n"
        if facts.exists and facts.content is None:
            return f"--- {self.path}\n+++ {self.path}\n(current content not read)\n"
        return "".join(difflib.unified_diff(a, b, f"{self.path} (host)" if facts.exists else "/dev/null",
                                            f"{self.path} (wanted)"))


@dataclass(frozen=True)
class Directory(Resource):
    path: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755
    role: str = ""
    phase: int = 2

    batch = STAT

    @property
    def key(self) -> str:
        return f"directory {self.path}"

    def batch_item(self, want_content: bool = False):
        return self.path, False

    def probe(self, want_content: bool = False) -> str:
        return _stat_probe(self.path, False)

    def parse(self, output: str) -> FileFacts:
        return _parse_stat(output)

    def plan(self, facts: FileFacts) -> list[Change]:
        p = q(self.path)
        fix = [f"chown {q(self.owner)}:{q(self.group)} {p}", f"chmod {_mode(self.mode)} {p}"]
        if not facts.exists:
            return [self.change("create", f"create directory {self.path}", [f"mkdir -p {p}"] + fix)]
        if facts.kind != "directory":
            return [self.change("update", f"replace {facts.kind} {self.path} with a directory",
                                [f"rm -f {p}", f"mkdir -p {p}"] + fix)]
        if (facts.owner, facts.group, facts.mode) != (self.owner, self.group, _mode(self.mode)):
            return [self.change("update", f"set owner/mode of {self.path}", fix)]
        return []


@dataclass(frozen=True)
class Symlink(Resource):
    path: str
    target: str
    role: str = ""
    notify: tuple[Handler, ...] = ()
    replace: bool = True       # False: create when missing, then leave where it points alone (deploys switch it)
    phase: int = 2

    batch = STAT

    @property
    def key(self) -> str:
        return f"link {self.path}"

    def batch_item(self, want_content: bool = False):
        return self.path, False

    def probe(self, want_content: bool = False) -> str:
        return _stat_probe(self.path, False)

    def parse(self, output: str) -> FileFacts:
        return _parse_stat(output)

    def plan(self, facts: FileFacts) -> list[Change]:
        if facts.exists and facts.kind == "symbolic link" and (facts.link == self.target or not self.replace):
            return []
        return [self.change("update" if facts.exists else "create", f"link {self.path} -> {self.target}",
                            [f"ln -sfn {q(self.target)} {q(self.path)}"], notify=self.notify)]


@dataclass(frozen=True)
class Absent(Resource):
    path: str
    role: str = ""
    notify: tuple[Handler, ...] = ()
    phase: int = 2

    batch = STAT

    @property
    def key(self) -> str:
        return f"absent {self.path}"

    def batch_item(self, want_content: bool = False):
        return self.path, False

    def probe(self, want_content: bool = False) -> str:
        return _stat_probe(self.path, False)

    def parse(self, output: str) -> FileFacts:
        return _parse_stat(output)

    def plan(self, facts: FileFacts) -> list[Change]:
        if not facts.exists:
            return []
        return [self.change("remove", f"remove {self.path}", [f"rm -f {q(self.path)}"], notify=self.notify)]
