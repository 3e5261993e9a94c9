"""A real browser for the tests: Debian's chromium driven by playwright (no browser download)."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def browser():
    """A headless chromium; fails with the fix when it is not installed."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run `bash scripts/setup.sh --tests`"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Login:
    url: str          # where the browser ended up
    text: str         # the page's visible text there
    cookies: set[str]


def airflow_login(base: str, username: str, password: str, then: str = "", wait_for: str = "",
                  timeout_ms: int = 60_000) -> Login:
    """Open Airflow's UI at ``base`` (e.g. http://127.0.0.1:8080/airflow) as a user does: the UI sends
    the browser to the login form, which is filled in and submitted. Then ``then`` (a path under
    ``base``) is opened and, when given, ``wait_for`` text awaited on it."""
    with browser() as b:
        page = b.new_page()
        page.set_default_timeout(timeout_ms)
        page.goto(base + "/")
        page.wait_for_selector("input[name=username]")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("[type=submit]")
        if "/auth/login" not in page.url and then:
            page.goto(base + then)
        if "/auth/login" not in page.url and wait_for:
            page.wait_for_selector(f"text={wait_for}")
        else:
            page.wait_for_load_state("networkidle")
        return Login(page.url, page.inner_text("body"), {c["name"] for c in page.context.cookies()})
