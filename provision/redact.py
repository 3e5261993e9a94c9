"""The one place that hides secrets from everything printed or logged."""
from __future__ import annotations

import threading

MASK = "********"


class Redactor:
    def __init__(self, secrets: tuple[str, ...] = ()):
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        """Hide ``secret`` from now on (short values are ignored: they would mask ordinary words)."""
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for s in secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text
