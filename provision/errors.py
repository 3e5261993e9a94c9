"""User-facing errors: each renders as one line with what went wrong and how to fix it."""


class DropshipError(Exception):
    """An error meant for the user: printed as one line, no traceback."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class InventoryError(DropshipError):
    """Invalid inventory: names the file, line and key."""

    def __init__(self, path, line: int | None, key: str, problem: str, fix: str | None = None):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {key}: {problem}", fix)
        self.path, self.line, self.key, self.problem = path, line, key, problem


class ProviderError(DropshipError):
    """A provider (Docker engine, DigitalOcean API) refused or failed."""


class RemoteError(DropshipError):
    """A step failed on a host: names the host and the step."""

    def __init__(self, host: str, step: str, detail: str, fix: str | None = None):
        super().__init__(f"{host}: {step}: {detail}", fix)
        self.host, self.step, self.detail = host, step, detail
