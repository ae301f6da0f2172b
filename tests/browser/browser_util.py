"""Helpers of the browser tests (tests/browser/test_*.py, which hold the fixtures): building the web
UI, the tiny chat model, one headless Debian chromium shared by the test modules, pages in it, and
the steps every test takes.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT, make_tiny_model

CHROMIUM = os.environ.get("CHATLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct horse battery"
PHONE = {"width": 390, "height": 844}

# Records the shown length of the streaming answer at every DOM change, to see it grow.
STREAM_RECORDER = """
window.__lengths = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('[data-testid=assistant-message]');
  const last = answers[answers.length - 1];
  if (last && last.dataset.status === 'streaming') window.__lengths.push(last.innerText.length);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def skip_or_fail(reason: str):
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


_SHARED: dict = {"users": 0}


@contextmanager
def shared_browser():
    """The chromium of this test session. Playwright's sync API runs one instance per thread, so the
    test modules' `browser` fixtures share it; the last one to finish closes it."""
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or set CHATLOOP_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the python 'playwright' package is not installed: pip install playwright")
    if _SHARED["users"] == 0:
        playwright = sync_playwright().start()
        _SHARED.update(playwright=playwright,
                       browser=playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS))
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED.pop("browser").close()
            _SHARED.pop("playwright").stop()


def build_web() -> None:
    """Build web/dist unless it is newer than every source file (`make web` builds it too)."""
    index = WEB / "dist" / "index.html"
    sources = [p for p in (WEB / "src").rglob("*") if p.is_file()] + [WEB / "index.html", WEB / "package-lock.json"]
    if index.is_file() and index.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to build web/dist (install Node.js 20+)")
    if not (WEB / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    subprocess.run([npm, "run", "build"], cwd=WEB, check=True)


def new_page(browser, server, viewport, errors, color_scheme="light"):
    context = browser.new_context(viewport=viewport, base_url=server.url, color_scheme=color_scheme,
                                  locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)  # CI machines are loaded: assertions wait like actions do
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(STREAM_RECORDER)
    return page


# --- helpers --------------------------------------------------------------------------------------

def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def csrf_headers(page) -> dict:
    return {"X-CSRF-Token": next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")}


def capped(page, max_tokens: int = 24) -> None:
    """Short answers: add max_tokens to the send/regenerate request bodies the UI posts."""
    def handle(route):
        if route.request.method != "POST":
            return route.continue_()
        body = json.loads(route.request.post_data or "{}")
        body.setdefault("max_tokens", max_tokens)
        route.continue_(post_data=json.dumps(body))

    page.route(re.compile(r".*/api/conversations/[^/]+/messages$"), handle)


def greedy_turns(page) -> None:
    """Every turn the page sends asks for temperature 0: the same answer on every CPU."""
    import re

    def greedy(route):
        body = {**json.loads(route.request.post_data or "{}"), "temperature": 0}
        route.continue_(post_data=json.dumps(body))

    page.route(re.compile(r".*/api/conversations/[^/]+/messages$"), greedy)


def sign_up(page, email: str | None = None) -> str:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    page.goto("/signup")
    page.get_by_label(re.compile("Email")).fill(email)
    page.get_by_label(re.compile("Password")).fill(PASSWORD)
    page.get_by_test_id("auth-submit").click()
    page.get_by_test_id("composer").wait_for()
    return email


def log_in(page, email: str) -> None:
    page.goto("/login")
    page.get_by_label(re.compile("Email")).fill(email)
    page.get_by_label(re.compile("Password")).fill(PASSWORD)
    page.get_by_test_id("auth-submit").click()
    page.get_by_test_id("composer").wait_for()


def open_admin(page, section: str | None = None) -> None:
    """Settings → Admin (→ a section: users, dashboard, releases); opens the sidebar on a phone."""
    if page.viewport_size["width"] <= 768:  # the sidebar is slid away
        page.get_by_role("button", name="Menu").click()
    page.get_by_test_id("settings").click()
    page.get_by_test_id("tab-admin").click()
    if section:
        page.get_by_test_id(f"admin-tab-{section}").click()


def send(page, text: str) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")


def wait_answer(page, index: int = -1, status: str = "complete"):
    from playwright.sync_api import expect

    answers = page.get_by_test_id("assistant-message")
    answer = answers.nth(index) if index >= 0 else answers.last
    expect(answer).to_have_attribute("data-status", status, timeout=60_000)
    expect(page.get_by_test_id("send")).to_be_visible()
    return answer


def conversation_id(page) -> str:
    match = re.search(r"/c/([^/]+)$", page.url)
    assert match, page.url
    return match.group(1)


def api_get(page, path: str):
    """GET with the page's session cookie (what the server really stored)."""
    r = page.request.get(path)
    assert r.ok, r.text()
    return r.json()


def make_chat_model(directory: Path, tokenizer) -> Path:
    """The tiny random model, with room for a prompt plus the server's default answer length."""
    from chatloop.models.manifest import write_manifest

    make_tiny_model(directory, tokenizer)
    config = json.loads((directory / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # rotary positions: no weight depends on it
    (directory / "config.json").write_text(json.dumps(config))
    write_manifest(directory, name="tiny-llama", version="test")
    return directory
