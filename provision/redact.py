"""The one place that hides secrets from everything printed or logged."""
from __future__ import annotations

import re
import threading
from urllib.parse import quote, quote_plus

MASK = "********"
SHORT = 3       # shorter values are never masked (they are no secret)
LONG = 6        # shorter values are masked only where they stand as a whole word


class Redactor:
    def __init__(self, secrets: tuple[str, ...] = ()):
        self._secrets: set[str] = set()
        self._pattern: re.Pattern | None = None
        self._lock = threading.Lock()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        """Hide ``secret`` and its URL-quoted forms (as in a DATABASE_URL) from now on.

        Values of ``LONG`` characters or more are masked wherever they occur; shorter ones (down to
        ``SHORT``) only as a whole word, so a weak short password does not mask parts of ordinary words.
        """
        if not secret or len(secret) < SHORT:
            return
        forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
        with self._lock:
            if not forms <= self._secrets:
                self._secrets |= forms
                self._pattern = None

    def _compiled(self) -> re.Pattern | None:
        with self._lock:
            if self._pattern is None and self._secrets:
                alternatives = [re.escape(s) if len(s) >= LONG else rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])"
                                for s in sorted(self._secrets, key=lambda s: (-len(s), s))]
                self._pattern = re.compile("|".join(alternatives))
            return self._pattern

    def __call__(self, text: str) -> str:
        if not text:
            return text
        pattern = self._compiled()
        return pattern.sub(MASK, text) if pattern else text
