"""The tool-tuned model in the web UI (headless Debian chromium, the real server, float32, greedy):
with the calculator switched on and the tool-tuned default model picked, a Chinese word problem
(which the pulled Qwen alone answers with 5) is answered through a calculator call, shown as a
card, and the answer is 7. The model comes from the `tool_model_ref` fixture (tests/conftest.py)."""

import json
import re

import pytest
from browser_util import ARTIFACTS, build_web, greedy_turns, new_page, send, shared_browser, shot, sign_up
from server_util import Server

from chatloop.tools.calculator import calculate

# slow; when the fixture trains the model (CHATLOOP_TEST_TRAIN_TOOL_MODEL=1) that alone takes ~15 min
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
QUESTION = "小明有5个苹果，吃了2个，又买了4个，现在有几个？"


@pytest.fixture(scope="module")
def browser():
    with shared_browser() as b:
        yield b


@pytest.fixture(scope="module")
def server(browser, tool_model_ref, tmp_path_factory):
    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("browser-tool-model-db") / "chatloop.db"
    srv = Server(["default", tool_model_ref], f"sqlite:///{db}", dtype="float32",
                 log=ARTIFACTS / "browser-tool-model-server.log").start(timeout=600)
    yield srv
    srv.stop()


def test_the_tool_tuned_model_answers_a_chinese_word_problem_with_the_calculator(browser, server):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, server, {"width": 1280, "height": 900}, errors)
    greedy_turns(page)
    sign_up(page)
    picker = page.get_by_test_id("model-picker")
    expect(picker.locator("option")).to_have_count(2)  # the list arrives after the page: wait for both models
    values = picker.locator("option").evaluate_all("els => els.map(e => e.value)")
    picker.select_option(next(v for v in values if v != "default"))  # the server's second model: the tuned one
    page.get_by_test_id("tools-menu").click()
    page.get_by_test_id("tool-toggle-calculator").set_checked(True)
    page.keyboard.press("Escape")

    send(page, QUESTION)
    cards = page.locator("[data-testid=tool-call][data-tool-name=calculator]")
    expect(cards.first).to_be_visible(timeout=600_000)
    expect(page.get_by_test_id("send")).to_be_visible(timeout=600_000)  # the loop's last answer is in
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-status", "complete")
    cards.first.get_by_test_id("tool-call-toggle").click()
    expect(cards.first.get_by_test_id("tool-call-result")).to_contain_text("7")
    expression = json.loads(cards.first.get_by_test_id("tool-call-arguments").inner_text())["expression"]
    assert calculate(expression) == "7", expression
    assert "7" in re.findall(r"\d+", answer.inner_text()), answer.inner_text()
    shot(page, "40-tool-model-calculator")
    page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
