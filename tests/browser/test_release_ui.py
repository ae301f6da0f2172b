"""Browser tests of what the web UI shows around model releases, against a real server serving two
registered names: `m` (m:1 stable, m:3 as a canary, every web turn a side-by-side vote:
CHATLOOP_VOTE_SHARE=1.0) and `r` (r:1 stable, r:2 and r:3 to release from the admin area).

- side-by-side votes: two answers, the question, reload before the vote, the vote revealing the
  versions and the chat continuing from the chosen answer, Stop stopping both;
- the admin dashboard: charts, the period selector, CSV downloads;
- release controls: canary, a refused promotion forced with a reason, rollbacks, the audit log.

Screenshots (light, dark, phone) go to test-artifacts/. Helpers live in browser_util.py.
"""

import re
import secrets
import sqlite3
from pathlib import Path

import pytest

from browser_util import (
    ARTIFACTS, PHONE, api_get, build_web, capped, conversation_id, log_in, new_page, open_admin, send,
    shared_browser, shot, sign_up,
)
from conftest import home_sharing_default, make_tiny_model
from server_util import Server, signup, sse_events

# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    with shared_browser() as b:
        yield b


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, tokenizer, default_dir):
    """Like tests/integration/test_releases.py's setup: a registry in a fresh CHATLOOP_HOME."""
    from chatloop.registry import releases
    from chatloop.registry.versions import import_ref
    from chatloop.store.db import Database

    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    tmp = tmp_path_factory.mktemp("browser-releases")
    home = home_sharing_default(tmp / "home", default_dir)
    db_url = f"sqlite:///{tmp / 'chatloop.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATLOOP_HOME", str(home))
        db = Database(db_url)
        with db.session() as s:
            for seed in (1, 2, 3):
                source = str(make_tiny_model(tmp / f"src{seed}", tokenizer, seed=seed, context=4096))
                import_ref(s, source, "m")
                import_ref(s, source, "r")
            releases.promote(s, "m", "1")
            releases.set_canary(s, "m", "3", 50)
            releases.promote(s, "r", "1")
        db.dispose()
    # The pool's default limit on extra versions (served stable and canary versions do not count).
    env = {"CHATLOOP_HOME": str(home), "CHATLOOP_VOTE_SHARE": "1.0"}
    srv = Server(["m", "r"], db_url, env=env, log=ARTIFACTS / "browser-release-server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server):
    """The first account (an administrator): (e-mail, an httpx client signed in as it)."""
    email = f"admin-{secrets.token_hex(4)}@example.com"
    client = signup(server.url, email)
    yield email, client
    client.close()


def _page(browser, server, viewport, color_scheme):
    errors: list[str] = []
    pg = new_page(browser, server, viewport, errors, color_scheme=color_scheme)
    yield pg
    pg.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture()
def page(browser, server, admin):
    yield from _page(browser, server, {"width": 1280, "height": 800}, "light")


@pytest.fixture()
def phone(browser, server, admin):
    yield from _page(browser, server, PHONE, "dark")


# --- helpers --------------------------------------------------------------------------------------

def wait_duel(page, count: int = 1, status: str = "complete"):
    """The last side-by-side vote, once both of its answers have `status` and the stream ended."""
    from playwright.sync_api import expect

    duels = page.get_by_test_id("duel")
    expect(duels).to_have_count(count)
    answers = duels.last.get_by_test_id("duel-answer")
    expect(answers).to_have_count(2)
    for i in range(2):
        expect(answers.nth(i)).to_have_attribute("data-status", status, timeout=60_000)
    expect(page.get_by_test_id("stop")).to_be_hidden()
    return duels.last, answers


def seed_activity(server, client, n: int = 9) -> None:
    """Answers, thumbs and votes over the last days, for charts with something in them."""
    for i in range(n):
        conv = client.post("/api/conversations", json={"model": "r"} if i % 4 == 3 else {}).json()
        with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                           json={"content": f"seed question {i}", "max_tokens": 4 + i % 5,
                                 "compare": i % 3 == 0}) as r:
            done = [e["message"] for e in sse_events(r) if isinstance(e, dict) and e["type"] == "done"]
        if len(done) == 2:
            assert client.post("/api/comparisons", json={"chosen_message_id": done[i % 2]["id"],
                                                         "rejected_message_id": done[1 - i % 2]["id"]}).status_code == 201
        for answer in done[:1]:
            rating = "up" if i % 3 != 1 else "down"
            assert client.post(f"/api/messages/{answer['id']}/feedback", json={"rating": rating}).status_code == 200
        with sqlite3.connect(server.db_url.removeprefix("sqlite:///")) as db:  # spread over the last days
            shift = f"-{i % 6} days"
            db.execute("UPDATE messages SET created_at = datetime(created_at, ?) WHERE conversation_id = ?",
                       (shift, conv["id"]))
            db.execute("UPDATE conversations SET created_at = datetime(created_at, ?) WHERE id = ?", (shift, conv["id"]))


def dark(page) -> None:
    """Follow a dark system theme (the account's theme is `system`): the charts redraw in it."""
    page.emulate_media(color_scheme="dark")
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    page.wait_for_timeout(200)


# --- side-by-side votes ---------------------------------------------------------------------------

def test_a_vote_turn_shows_two_answers_then_reveals_and_continues_from_the_choice(page):
    from playwright.sync_api import expect

    capped(page, 12)
    sign_up(page)  # not the administrator: a plain user
    send(page, "Which answer is better?")
    duel = page.get_by_test_id("duel")
    expect(duel).to_be_visible()
    expect(duel.get_by_test_id("duel-answer").first).to_contain_text("Response 1")
    duel, answers = wait_duel(page)
    expect(answers.nth(1)).to_contain_text("Response 2")
    expect(duel.get_by_role("heading")).to_have_text("Which response do you prefer?")
    expect(duel.get_by_test_id("prefer")).to_have_count(2)
    expect(duel.get_by_test_id("duel-model")).to_have_count(0)  # the versions stay hidden
    expect(page.get_by_test_id("composer")).to_be_disabled()
    first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
    assert abs(first["y"] - second["y"]) < 2 and second["x"] >= first["x"] + first["width"], "not side by side"
    ids = [answers.nth(i).get_attribute("data-message-id") for i in range(2)]
    shot(page, "18-duel-light")

    cid = conversation_id(page)
    stored = {m["id"]: m for m in api_get(page, f"/api/conversations/{cid}")["messages"]}
    assert all(stored[i]["model"] is None and stored[i]["voted"] is False for i in ids)
    assert stored[ids[0]]["duel_id"] == stored[ids[1]]["duel_id"] is not None

    page.reload()  # before the vote: the pair and the question again, in the same order
    duel, answers = wait_duel(page)
    expect(duel.get_by_role("heading")).to_have_text("Which response do you prefer?")
    assert [answers.nth(i).get_attribute("data-message-id") for i in range(2)] == ids

    with page.expect_response("**/api/comparisons") as response:
        answers.nth(1).get_by_test_id("prefer").click()
    assert response.value.status == 201
    assert response.value.request.post_data_json == {"chosen_message_id": ids[1], "rejected_message_id": ids[0]}
    expect(duel).to_have_class(re.compile("revealed"))
    expect(duel.get_by_test_id("prefer")).to_have_count(0)
    expect(duel.get_by_test_id("duel-model")).to_have_count(2)
    shown = duel.get_by_test_id("duel-model").all_inner_texts()
    assert set(shown) == {"m:1", "m:3"}
    expect(answers.nth(1).get_by_test_id("duel-chosen")).to_be_visible()
    stored = api_get(page, f"/api/conversations/{cid}")
    assert stored["current_leaf_id"] == ids[1]
    versions = {m["id"]: m["model"] for m in stored["messages"]}
    assert [versions[i] for i in ids] == shown and all(m["voted"] for m in stored["messages"] if m["id"] in ids)
    shot(page, "19-duel-revealed-light")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    shot(page, "19b-duel-revealed-dark")
    page.evaluate("document.documentElement.dataset.theme = 'light'")

    expect(page.get_by_test_id("composer")).to_be_enabled()
    send(page, "And a follow-up")
    wait_duel(page)  # every turn of this server is a vote while the canary runs
    chosen = page.get_by_test_id("assistant-message")
    expect(chosen).to_have_count(1)  # the pair voted on folds into the chosen answer, version shown
    expect(chosen).to_have_attribute("data-message-id", ids[1])
    expect(chosen.get_by_test_id("model-tag")).to_have_text(shown[1])
    expect(chosen.get_by_test_id("branch-count")).to_have_text("2/2")
    follow_up = [m for m in api_get(page, f"/api/conversations/{cid}")["messages"] if m["content"] == "And a follow-up"]
    assert len(follow_up) == 1 and follow_up[0]["parent_id"] == ids[1]


def test_stop_during_a_vote_stops_both_answers(page):
    from playwright.sync_api import expect

    capped(page, 400)
    sign_up(page)
    send(page, "Tell me two long stories")
    page.wait_for_function("""() => {
        const answers = [...document.querySelectorAll('[data-testid=duel-answer] .markdown')];
        return answers.length === 2 && answers.every((a) => a.innerText.length > 10);
    }""")
    page.get_by_test_id("stop").click()
    duel, answers = wait_duel(page, status="stopped")
    expect(answers.nth(0).get_by_text("Stopped")).to_be_visible()
    # the server finalises the answers when it sees the disconnect: poll (a loaded machine takes a while)
    for _ in range(100):
        stored = [m for m in api_get(page, f"/api/conversations/{conversation_id(page)}")["messages"]
                  if m["role"] == "assistant"]
        if all(m["status"] != "streaming" for m in stored):
            break
        page.wait_for_timeout(200)
    assert len(stored) == 2 and {m["status"] for m in stored} == {"stopped"} and all(m["content"] for m in stored)


def test_a_vote_on_a_phone_is_stacked(phone):
    from playwright.sync_api import expect

    capped(phone, 16)
    sign_up(phone)
    send(phone, "Two answers on a small screen?")
    duel, answers = wait_duel(phone)
    first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
    assert second["y"] >= first["y"] + first["height"], "the answers are not stacked on a phone"
    assert first["x"] >= 0 and first["x"] + first["width"] <= PHONE["width"]
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(phone.get_by_test_id("composer")).to_have_attribute("placeholder", "Pick a response to continue")
    shot(phone, "20-duel-phone-dark")
    answers.nth(0).get_by_test_id("prefer").scroll_into_view_if_needed()
    shot(phone, "20b-duel-phone-dark-prefer")


# --- dashboard ------------------------------------------------------------------------------------

def test_dashboard_draws_charts_refetches_per_period_and_downloads_csv(page, server, admin):
    from playwright.sync_api import expect

    email, client = admin
    seed_activity(server, client)
    log_in(page, email)
    open_admin(page, "dashboard")
    dashboard = page.get_by_test_id("dashboard")
    for chart in ("activity", "tokens", "thumbs", "latency", "ttft", "speed", "canary-quality", "canary-latency",
                  "canary-speed"):
        expect(dashboard.get_by_test_id(f"chart-{chart}").locator("canvas")).to_be_visible()
    expect(dashboard.get_by_test_id("canary-card")).to_have_count(1)
    expect(dashboard.get_by_test_id("canary-card")).to_contain_text("canary m:3 on 50%")
    expect(dashboard.get_by_test_id("canary-votes")).to_contain_text(re.compile(r"\d+ votes"))
    assert dashboard.locator("canvas").count() >= 9
    expect(dashboard.get_by_test_id("days-30")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(300)
    shot(page, "21-dashboard-light")

    with page.expect_response(lambda r: "/api/admin/dashboard?days=7" in r.url) as response:
        dashboard.get_by_test_id("days-7").click()
    assert response.value.ok and response.value.json()["days"] == 7 and len(response.value.json()["daily"]) == 7
    expect(dashboard.get_by_test_id("days-7")).to_have_attribute("aria-pressed", "true")
    expect(dashboard.get_by_test_id("chart-activity").locator("canvas")).to_be_visible()

    for table, header in (("daily", "day,active_users,conversations,messages,tokens"),
                          ("versions", "version,answers,thumbs_up,thumbs_down,thumbs_up_rate,ci_low,ci_high")):
        with page.expect_download() as download:
            dashboard.get_by_test_id(f"csv-{table}").click()
        assert download.value.suggested_filename == f"chatloop-{table}-7d.csv"
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0].startswith(header) and len(lines) > 1

    dashboard.get_by_test_id("canary-card").scroll_into_view_if_needed()
    shot(page, "21b-dashboard-canary-light")
    dark(page)
    shot(page, "22-dashboard-dark")
    dashboard.get_by_test_id("version-table").scroll_into_view_if_needed()
    shot(page, "22b-dashboard-dark-bottom")


def test_dashboard_fits_a_phone(phone, admin):
    from playwright.sync_api import expect

    log_in(phone, admin[0])
    open_admin(phone, "dashboard")
    expect(phone.get_by_test_id("chart-activity").locator("canvas")).to_be_visible()
    phone.wait_for_function("document.querySelector('.sidebar').getBoundingClientRect().right <= 0")
    for box in phone.locator("[data-testid=dashboard] canvas").evaluate_all(
            "els => els.map(e => e.getBoundingClientRect().right)"):
        assert box <= PHONE["width"], "a chart is wider than the phone"
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(phone, "23-dashboard-phone-dark")
    phone.get_by_test_id("dashboard").get_by_test_id("canary-card").scroll_into_view_if_needed()
    shot(phone, "23b-dashboard-phone-dark-canary")


# --- release controls -----------------------------------------------------------------------------

def test_release_controls_canary_promote_and_rollback_with_the_audit_log(page, admin):
    from playwright.sync_api import expect

    email = admin[0]
    log_in(page, email)
    open_admin(page, "releases")
    model = page.locator("[data-testid=release-model][data-name=r]")
    expect(model.get_by_test_id("channel-stable")).to_contain_text("r:1")
    expect(model.get_by_test_id("channel-canary")).to_have_count(0)
    log = page.get_by_test_id("audit-log").get_by_test_id("audit-event")
    dialog = page.get_by_test_id("release-dialog")

    def row(version: str):
        return model.locator(f"[data-testid=release-version][data-version='{version}']")

    # Escape closes the confirmation only, not the settings under it.
    row("r:3").get_by_test_id("start-canary").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("settings-dialog")).to_be_visible()

    # 1. a canary on 25% of new conversations
    row("r:3").get_by_test_id("start-canary").click()
    dialog.get_by_test_id("release-percent").fill("25")
    expect(dialog.get_by_test_id("release-summary")).to_have_text(
        "r:3 will answer 25% of new conversations of r; the others stay on r:1.")
    shot(page, "24-release-confirm-light")
    dialog.get_by_test_id("release-confirm").click()
    expect(dialog).to_be_hidden()
    expect(model.get_by_test_id("channel-canary")).to_contain_text("r:3 · 25%")
    expect(row("r:3").get_by_test_id("version-channel")).to_have_text("Canary 25%")
    expect(log.first).to_have_attribute("data-action", "canary")
    expect(log.first).to_contain_text(email)
    expect(log.first).to_contain_text("25%")
    picker = page.get_by_test_id("model-picker").locator("option", has_text="canary r:3 25%")
    expect(picker).to_have_count(1)  # the administrator's picker shows the channels

    # 2. promote without evaluations: refused; forced with a reason it goes through
    row("r:2").get_by_test_id("promote").click()
    expect(dialog.get_by_test_id("release-summary")).to_contain_text("r:2 becomes the stable version of r")
    dialog.get_by_test_id("release-confirm").click()
    refusal = dialog.get_by_test_id("release-refusal")
    expect(refusal).to_contain_text("no stored evaluations")
    expect(dialog.get_by_test_id("release-confirm")).to_be_disabled()
    dialog.get_by_test_id("release-force").check()
    expect(dialog.get_by_test_id("release-confirm")).to_be_disabled()  # a reason is required
    dialog.get_by_test_id("release-reason").fill("hotfix for a bad answer")
    expect(dialog.get_by_test_id("release-confirm")).to_have_text("Force promote")
    shot(page, "25-release-refusal-light")
    dialog.get_by_test_id("release-confirm").click()
    expect(dialog).to_be_hidden()
    expect(model.get_by_test_id("channel-stable")).to_contain_text("r:2")
    expect(log.first).to_have_attribute("data-action", "promote")
    expect(log.first).to_contain_text("forced: hotfix for a bad answer")

    # 3. roll back, twice: the canary ends, then stable goes back to r:1
    expect(model.get_by_test_id("rollback")).to_have_text("End canary…")
    model.get_by_test_id("rollback").click()
    expect(dialog.get_by_test_id("release-summary")).to_have_text(
        "The canary r:3 of r ends: all new conversations go to the stable version r:2.")
    dialog.get_by_test_id("release-confirm").click()
    expect(dialog).to_be_hidden()
    expect(model.get_by_test_id("channel-canary")).to_have_count(0)
    expect(log.first).to_have_attribute("data-action", "end-canary")
    model.get_by_test_id("rollback").click()
    expect(dialog.get_by_test_id("release-summary")).to_have_text(
        "r goes back from r:2 to the previous stable version, r:1.")
    dialog.get_by_test_id("release-confirm").click()
    expect(dialog).to_be_hidden()
    expect(model.get_by_test_id("channel-stable")).to_contain_text("r:1")
    expect(log.first).to_have_attribute("data-action", "rollback")

    mine = [e for e in api_get(page, "/api/admin/releases")["events"] if e["name"] == "r" and e["actor"] == email]
    assert [e["action"] for e in mine] == ["rollback", "end-canary", "promote", "canary"]
    for i in range(4):
        expect(log.nth(i)).to_contain_text(email)
    shot(page, "26-releases-light")
    page.get_by_test_id("audit-log").scroll_into_view_if_needed()
    shot(page, "26b-audit-log-light")
    dark(page)
    shot(page, "27-releases-dark")


def test_release_controls_fit_a_phone(phone, admin):
    from playwright.sync_api import expect

    log_in(phone, admin[0])
    open_admin(phone, "releases")
    expect(phone.get_by_test_id("audit-log")).to_be_visible()
    phone.wait_for_function("document.querySelector('.sidebar').getBoundingClientRect().right <= 0")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(phone.get_by_test_id("settings-dialog")).to_be_in_viewport()
    shot(phone, "28-releases-phone-dark")
    phone.get_by_test_id("audit-log").scroll_into_view_if_needed()
    shot(phone, "28a-audit-log-phone-dark")
    phone.locator("[data-testid=release-model][data-name=r] [data-testid=release-version]").first \
        .get_by_test_id("start-canary").click()
    expect(phone.get_by_test_id("release-dialog")).to_be_in_viewport(ratio=1)
    shot(phone, "28b-release-confirm-phone-dark")
