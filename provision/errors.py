"""User-facing errors: each renders as one line with what went wrong and how to fix it."""


class DropshipError(Exception):
    """An error meant for the user: printed as one line, no traceback."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


def one_line(text: str) -> str:
    """``text`` with every character that would break or hide its line escaped (``\\n``, ``\\u2028``,
    ``\\x1b``…), so a user's value quoted in an error keeps the error on one visible line (pure)."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)


def changed_nothing(error: str, command: str) -> str:
    """A host's one-line error (``… (fix: …)``) saying that ``command`` changed nothing, before its fix
    (pure): a check of every host stopped it before any change."""
    head, sep, fix = error.partition(" (fix: ")
    return f"{head}; {command} changed nothing{sep}{fix}"


class InventoryError(DropshipError):
    """Invalid inventory: names the file, line and key (values quoted in it are kept on one line)."""

    def __init__(self, path, line: int | None, key: str, problem: str, fix: str | None = None):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {one_line(str(key))}: {one_line(str(problem))}", fix and one_line(fix))
        self.path, self.line, self.key, self.problem = path, line, key, problem


class ProviderError(DropshipError):
    """A provider (Docker engine, DigitalOcean API) refused or failed."""


class RemoteError(DropshipError):
    """A step failed on a host: names the host and the step."""

    def __init__(self, host: str, step: str, detail: str, fix: str | None = None):
        super().__init__(f"{host}: {step}: {detail}", fix)
        self.host, self.step, self.detail = host, step, detail
