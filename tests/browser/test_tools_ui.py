"""Tools in the web UI (headless Debian chromium, Playwright, the real server): the composer's tools
menu lists the server's built-in tools and the choice is stored with the conversation; documents are
uploaded, listed and removed; with the pulled Qwen model (float32, greedy) a calculator call shows as
a card under the answer, and a call of a tool that is not read-only (python) waits for the user's
approval, then runs and the answer goes on.

The Qwen tests are slow (the model answers on CPU, twice per tool loop); the others take seconds.
"""

import re

import pytest
from browser_util import (
    ARTIFACTS,
    greedy_turns,
    api_get,
    build_web,
    capped,
    conversation_id,
    make_chat_model,
    new_page,
    send,
    shared_browser,
    shot,
    sign_up,
    wait_answer,
)
from server_util import Server

TOOL_LOOP_TIMEOUT = 300_000  # ms: two answers of the 0.5B model on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser():
    with shared_browser() as b:
        yield b


@pytest.fixture(scope="module")
def tiny_server(browser, tokenizer, tmp_path_factory):
    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    model = make_chat_model(tmp_path_factory.mktemp("tools-tiny-chat"), tokenizer)
    db = tmp_path_factory.mktemp("browser-tools-db") / "chatloop.db"
    srv = Server(str(model), f"sqlite:///{db}", log=ARTIFACTS / "browser-tools-server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def qwen_server(browser, qwen_ref, tmp_path_factory):
    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("browser-tools-qwen-db") / "chatloop.db"
    # float32: greedy tokens that do not depend on the CPU's instruction set.
    srv = Server(qwen_ref, f"sqlite:///{db}", dtype="float32",
                 log=ARTIFACTS / "browser-tools-qwen-server.log").start(timeout=600)
    yield srv
    srv.stop()


def open_page(browser, server, errors):
    return new_page(browser, server, {"width": 1280, "height": 800}, errors)


@pytest.fixture()
def page(browser, tiny_server):
    errors: list[str] = []
    pg = open_page(browser, tiny_server, errors)
    yield pg
    pg.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture()
def qwen_page(browser, qwen_server):
    errors: list[str] = []
    pg = open_page(browser, qwen_server, errors)
    greedy_turns(pg)
    yield pg
    pg.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def set_tool(page, name: str, on: bool) -> None:
    """Switch one tool in the composer's menu, then close the menu."""
    from playwright.sync_api import expect

    page.get_by_test_id("tools-menu").click()
    toggle = page.get_by_test_id(f"tool-toggle-{name}")
    toggle.set_checked(on)
    expect(toggle).to_be_checked(checked=on)
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("tools-list")).to_have_count(0)


def stored_tools(page, cid: str) -> list[str]:
    return api_get(page, f"/api/conversations/{cid}")["tools"]


def wait_stored_tools(page, cid: str, expected: set[str]) -> None:
    """The PATCH is sent on the click; wait until the server has it."""
    for _ in range(50):
        if set(stored_tools(page, cid)) == expected:
            return
        page.wait_for_timeout(100)
    assert set(stored_tools(page, cid)) == expected


def card(page, name: str):
    return page.locator(f"[data-testid=tool-call][data-tool-name={name}]")


# --- the tools menu and documents (tiny model: seconds) -------------------------------------------

def test_the_tools_menu_lists_the_builtin_tools_and_the_choice_is_stored_with_the_conversation(page):
    from playwright.sync_api import expect

    sign_up(page)
    page.get_by_test_id("tools-menu").click()
    menu = page.get_by_test_id("tools-list")
    for name in ("calculator", "python", "current_time", "search_documents"):
        expect(page.get_by_test_id(f"tool-toggle-{name}")).not_to_be_checked()
    calculator = menu.locator("li").filter(has=page.get_by_test_id("tool-toggle-calculator"))
    python = menu.locator("li").filter(has=page.get_by_test_id("tool-toggle-python"))
    expect(calculator).to_contain_text("Read-only")
    expect(python).to_contain_text("Asks first")  # runs code: every call waits for the user
    expect(page.get_by_test_id("tools-count")).to_have_count(0)
    shot(page, "30-tools-menu")
    page.keyboard.press("Escape")

    # A new chat keeps the choice until its first message creates the conversation.
    set_tool(page, "calculator", True)
    expect(page.get_by_test_id("tools-count")).to_have_text("1")
    capped(page, 4)
    send(page, "Hello")
    wait_answer(page)
    cid = conversation_id(page)
    assert stored_tools(page, cid) == ["calculator"]

    set_tool(page, "python", True)
    expect(page.get_by_test_id("tools-count")).to_have_text("2")
    wait_stored_tools(page, cid, {"calculator", "python"})
    page.reload()
    expect(page.get_by_test_id("tools-count")).to_have_text("2")
    page.get_by_test_id("tools-menu").click()
    expect(page.get_by_test_id("tool-toggle-calculator")).to_be_checked()
    expect(page.get_by_test_id("tool-toggle-python")).to_be_checked()
    expect(page.get_by_test_id("tool-toggle-current_time")).not_to_be_checked()
    page.keyboard.press("Escape")

    set_tool(page, "calculator", False)
    wait_stored_tools(page, cid, {"python"})
    page.reload()
    expect(page.get_by_test_id("tools-count")).to_have_text("1")
    page.get_by_test_id("tools-menu").click()
    expect(page.get_by_test_id("tool-toggle-calculator")).not_to_be_checked()
    expect(page.get_by_test_id("tool-toggle-python")).to_be_checked()

    # Another new chat starts with no tools.
    page.keyboard.press("Escape")
    page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("tools-count")).to_have_count(0)


def test_a_document_is_uploaded_to_the_conversation_listed_after_a_reload_and_removed(page, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "meeting-notes.md"
    notes.write_text("# Meeting\n\nThe launch moves to Thursday; Priya owns the release checklist.\n")
    sign_up(page)
    capped(page, 4)
    send(page, "Hello")
    wait_answer(page)
    cid = conversation_id(page)

    with page.expect_file_chooser() as chooser:
        page.get_by_test_id("attach-document").click()
    assert chooser.value.element.get_attribute("accept") == ".txt,.md,.csv,.json,.html,.pdf"
    chooser.value.set_files(str(notes))
    chip = page.get_by_test_id("document-chip")
    expect(chip).to_have_count(1)
    expect(chip).to_have_attribute("data-state", "ready", timeout=120_000)  # chunked and embedded
    expect(chip).to_contain_text("meeting-notes.md")
    docs = api_get(page, f"/api/documents?conversation_id={cid}")
    assert [d["filename"] for d in docs] == ["meeting-notes.md"]
    # Retrieval reads documents through search_documents: uploading one switches it on.
    wait_stored_tools(page, cid, {"search_documents"})
    shot(page, "31-document-chip")

    page.reload()
    expect(page.get_by_test_id("document-chip")).to_have_count(1)
    expect(page.get_by_test_id("document-chip")).to_contain_text("meeting-notes.md")
    page.get_by_test_id("remove-document").click()
    expect(page.get_by_test_id("document-chip")).to_have_count(0)
    for _ in range(50):
        if not api_get(page, f"/api/documents?conversation_id={cid}"):
            break
        page.wait_for_timeout(100)
    assert api_get(page, f"/api/documents?conversation_id={cid}") == []
    page.reload()
    expect(page.get_by_test_id("assistant-message")).to_have_count(1)
    expect(page.get_by_test_id("document-chip")).to_have_count(0)


# --- the tool loop with the pulled Qwen model (slow) ----------------------------------------------
# The base model makes the call the prompt asks for, but after the result it calls the tool again
# (with the result as the new argument) rather than answering: the tests check the calls and their
# results as the user sees them, then stop the loop.

def stop_loop(page) -> None:
    """Stop a loop that is still going (the base model calls again); the page is ready after it."""
    from playwright.sync_api import expect

    stop = page.get_by_test_id("stop")
    if stop.is_visible():
        stop.click()
    expect(page.get_by_test_id("send")).to_be_visible(timeout=60_000)


@pytest.mark.slow
def test_qwen_calls_the_calculator_and_the_call_shows_as_a_card_under_the_answer(qwen_page):
    from playwright.sync_api import expect

    page = qwen_page
    sign_up(page)
    set_tool(page, "calculator", True)
    send(page, "Use the calculator tool to compute 48213 * 977.")
    calc = card(page, "calculator").first
    expect(calc).to_have_attribute("data-state", "done", timeout=TOOL_LOOP_TIMEOUT)
    expect(page.locator(".message.tool")).to_have_count(0)  # tool results are cards, not bubbles
    calc.get_by_test_id("tool-call-toggle").click()
    expect(calc.get_by_test_id("tool-call-arguments")).to_contain_text('"expression": "48213 * 977"')
    expect(calc.get_by_test_id("tool-call-result")).to_have_text("47104101")
    expect(calc.get_by_test_id("tool-call-duration")).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))
    shot(page, "32-calculator-card")
    stop_loop(page)
    cid = conversation_id(page)

    page.reload()  # the stored loop renders the same: the card under the answer that made the call
    calc = card(page, "calculator").first
    expect(calc).to_have_attribute("data-state", "done")
    calc.get_by_test_id("tool-call-toggle").click()
    expect(calc.get_by_test_id("tool-call-result")).to_have_text("47104101")
    messages = api_get(page, f"/api/conversations/{cid}")["messages"]
    caller = next(m for m in messages if m["role"] == "assistant")
    assert caller["tool_calls"][0]["function"]["name"] == "calculator"
    assert page.get_by_test_id("assistant-message").first.get_attribute("data-message-id") == caller["id"]


@pytest.mark.slow
def test_a_python_call_waits_for_approval_then_runs(qwen_page):
    from playwright.sync_api import expect

    page = qwen_page
    sign_up(page)
    set_tool(page, "python", True)
    send(page, "Run print(6*7) with the python tool.")
    expect(page.get_by_test_id("tool-approve")).to_be_visible(timeout=TOOL_LOOP_TIMEOUT)
    expect(page.get_by_test_id("tool-deny")).to_be_visible()
    py = card(page, "python")
    expect(py).to_have_attribute("data-state", "pending")
    expect(py.get_by_test_id("tool-call-arguments")).to_contain_text("print(6*7)")
    expect(page.get_by_test_id("composer")).to_be_disabled()  # the loop waits for the decision
    cid = conversation_id(page)
    waiting = api_get(page, f"/api/conversations/{cid}")["messages"]
    assert [m["status"] for m in waiting if m["role"] == "assistant"] == ["awaiting_approval"]
    assert not any(m["role"] == "tool" for m in waiting)  # nothing ran before the user said so
    shot(page, "33-python-approval")

    page.reload()  # a waiting answer loaded from the server asks again
    expect(page.get_by_test_id("tool-approve")).to_be_visible()
    page.get_by_test_id("tool-approve").click()
    py = card(page, "python").first
    expect(py).to_have_attribute("data-state", "done", timeout=TOOL_LOOP_TIMEOUT)
    py.get_by_test_id("tool-call-toggle").click()
    expect(py.get_by_test_id("tool-call-result")).to_contain_text("42")
    shot(page, "34-python-approved")
    stop_loop(page)

    messages = api_get(page, f"/api/conversations/{cid}")["messages"]
    first = next(m for m in messages if m["role"] == "tool")
    assert first["tool"]["name"] == "python" and "42" in first["content"], first


@pytest.mark.slow
def test_a_denied_python_call_does_not_run_and_its_card_says_so(qwen_page):
    from playwright.sync_api import expect

    page = qwen_page
    sign_up(page)
    set_tool(page, "python", True)
    send(page, "Run print(6*7) with the python tool.")
    expect(page.get_by_test_id("tool-deny")).to_be_visible(timeout=TOOL_LOOP_TIMEOUT)
    page.get_by_test_id("tool-deny").click()
    py = card(page, "python").first
    expect(py).to_have_attribute("data-state", "declined", timeout=TOOL_LOOP_TIMEOUT)
    expect(py).to_contain_text("You declined Python")
    py.get_by_test_id("tool-call-toggle").click()
    expect(py.get_by_test_id("tool-call-result")).to_contain_text("declined")
    expect(py.get_by_test_id("tool-call-result")).not_to_contain_text("42")
    stop_loop(page)

    messages = api_get(page, f"/api/conversations/{conversation_id(page)}")["messages"]
    first = next(m for m in messages if m["role"] == "tool")
    assert first["tool"]["is_error"] and "42" not in first["content"], first
