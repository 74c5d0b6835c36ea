"""The Content-Security-Policy header, and the markup that lets pages live under it.

The browser half (pages work, injected script does not run) is ``test_csp_browser.py``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.django_db

# What the policy refuses, as it appears in template or script source.
FORBIDDEN = {
    "inline <script>": re.compile(r"<script\b(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
    "event-handler attribute": re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
    "hx-on attribute": re.compile(r"\bhx-on\b|\bdata-hx-on\b", re.I),
    "style attribute": re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I),
    "<style> element": re.compile(r"<style\b", re.I),
    "eval-like call": re.compile(r"\beval\(|new Function\(|setAttribute\(\s*[\"']style[\"']"),
}


def policy_of(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


class MetaReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.textarea: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "meta" and found.get("name"):
            self.meta[found["name"] or ""] = found.get("content") or ""
        if tag == "textarea" and found.get("id") == "sql":
            self.textarea = found


def read(html: bytes) -> MetaReader:
    reader = MetaReader()
    reader.feed(html.decode())
    return reader


def test_every_page_carries_the_policy(world, client):
    anonymous = client.get("/accounts/login/")
    signed_in = world.client("admin")
    pages = [anonymous, signed_in.get("/w/acme/jobs/"), signed_in.get("/w/acme/sql/"),
             signed_in.get("/w/acme/no-such-page/"), client.get("/admin/login/")]
    assert [r.status_code for r in pages] == [200, 200, 200, 404, 302]
    for response in pages:
        policy = policy_of(response)
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'", policy
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'", policy
        assert policy["base-uri"] == policy["form-action"] == policy["connect-src"] == "'self'", policy
        assert policy["img-src"] == "'self' data:" and policy["font-src"] == "'self'", policy
        assert re.fullmatch(r"'self' 'nonce-[\w-]{22}'", policy["style-src"]), policy
        assert "unsafe" not in response["Content-Security-Policy"]
    nonces = {policy_of(r)["style-src"] for r in pages}
    assert len(nonces) == len(pages), "a nonce was reused"


def test_the_editor_hands_codemirror_the_responses_nonce(world):
    response = world.client("analyst").get("/w/acme/sql/")
    nonce = re.search(r"'nonce-([\w-]+)'", response["Content-Security-Policy"]).group(1)
    assert read(response.content).textarea.get("data-csp-nonce") == nonce


def test_htmx_is_configured_without_eval_or_injected_styles(world):
    meta = read(world.client("viewer").get("/w/acme/jobs/").content).meta
    config = json.loads(meta["htmx-config"])
    assert config["allowEval"] is False and config["includeIndicatorStyles"] is False
    css = (REPO / "static" / "css" / "app.css").read_text()
    assert ".htmx-request .htmx-indicator" in css, "the indicator CSS htmx no longer injects"


def without_comments(path: Path) -> str:
    """The file's text with comments blanked (line numbers kept): they never reach a browser."""
    text = path.read_text()
    if path.suffix == ".html":
        pattern = re.compile(r"\{#.*?#\}|\{% comment %\}.*?\{% endcomment %\}", re.S)
    else:
        pattern = re.compile(r"^\s*//.*$", re.M)
    return pattern.sub(lambda m: "\n" * m.group().count("\n"), text)


@pytest.mark.parametrize("root", ["templates", "static/sqlwarehouse", "static/controlroom"])
def test_no_markup_or_script_the_policy_refuses(root):
    found = []
    for path in sorted(Path(REPO / root).rglob("*")):
        if path.suffix not in (".html", ".js"):
            continue
        text = without_comments(path)
        for what, pattern in FORBIDDEN.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {what}: {match.group()[:100]!r}")
    assert not found, "\n".join(found)


def test_static_files_carry_the_policy_too(client):
    """WhiteNoise answers static files before most middleware: the policy must wrap it as well."""
    from django.contrib.staticfiles import finders

    assert finders.find("css/app.css")
    answer = client.get("/static/css/app.css")
    assert answer.status_code == 200 and "script-src 'self'" in answer["Content-Security-Policy"]
