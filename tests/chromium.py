"""Debian's Chromium for the browser tests, driven by playwright (never `playwright install`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
# As root, and quiet: without the background-networking flags Chromium keeps dialling hosts this
# machine's closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on the way out; the test fails clearly if it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def orm(call: Callable[[], T]) -> T:
    """Run an ORM call off the thread whose event loop Playwright owns (Django refuses it there)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def shot(page: Page, name: str, folder: str = os.environ.get("SSO_SHOTS", "")) -> None:
    """A full-page screenshot into ``folder`` (SSO_SHOTS by default), when one is named."""
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)
