"""Image input in the web UI (headless Debian chromium, Playwright): attach a picture of printed text,
ask about it, and the real default model (float32, greedy) quotes what OCR read from it; the image
stays in the conversation; a rejected file is reported and a thumbnail can be removed.
"""

import json
import re

import pytest
from browser_util import ARTIFACTS, build_web, new_page, send, shared_browser, shot, sign_up
from image_util import INVOICE, rendered
from server_util import Server

pytestmark = pytest.mark.slow  # the real default model answers, after OCR reads the image


@pytest.fixture(scope="module")
def browser():
    with shared_browser() as b:
        yield b


@pytest.fixture(scope="module")
def default_server(browser, tmp_path_factory):
    build_web()
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("browser-image-db") / "chatloop.db"
    srv = Server("default", f"sqlite:///{db}", dtype="float32",
                 log=ARTIFACTS / "browser-image-server.log").start()
    yield srv
    srv.stop()


@pytest.fixture()
def page(browser, default_server):
    errors: list[str] = []
    pg = new_page(browser, default_server, {"width": 1280, "height": 800}, errors)

    def greedy(route):  # float32 greedy: the same answer on every CPU
        body = {**json.loads(route.request.post_data or "{}"), "temperature": 0, "max_tokens": 40}
        route.continue_(post_data=json.dumps(body))

    pg.route(re.compile(r".*/api/conversations/[^/]+/messages$"), greedy)
    yield pg
    pg.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_an_attached_invoice_is_read_and_its_total_quoted(page, tmp_path):
    from playwright.sync_api import expect

    invoice = tmp_path / "invoice.png"
    invoice.write_bytes(rendered(INVOICE))
    sign_up(page)
    with page.expect_file_chooser() as chooser:
        page.get_by_test_id("attach").click()
    chooser.value.set_files(str(invoice))
    expect(page.get_by_test_id("attachment-preview")).to_have_count(1)
    expect(page.locator(".thumb.uploading")).to_have_count(0)  # uploaded: ready to send
    shot(page, "20-image-attached")
    send(page, "What is the total on this invoice? Quote it exactly.")
    image = page.get_by_test_id("user-image")
    expect(image).to_be_visible(timeout=240_000)  # after OCR, on a loaded CPU
    expect(page.get_by_test_id("attachment-preview")).to_have_count(0)
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-status", "complete", timeout=240_000)
    expect(answer).to_contain_text("1,284.50")
    shot(page, "21-image-answer")
    assert image.evaluate("img => img.naturalWidth") == 640  # the stored upload, served back to its owner
    page.reload()
    expect(page.get_by_test_id("user-image")).to_have_count(1)
    expect(page.get_by_test_id("user-image")).to_have_js_property("naturalWidth", 640)


def test_a_rejected_file_is_reported_and_a_thumbnail_can_be_removed(page, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    picture = tmp_path / "picture.png"
    picture.write_bytes(rendered("hello"))
    sign_up(page)
    page.get_by_test_id("attach-input").set_input_files(str(notes))
    expect(page.get_by_test_id("toast")).to_contain_text("Only images can be attached")
    expect(page.get_by_test_id("attachment-preview")).to_have_count(0)
    page.get_by_test_id("attach-input").set_input_files(str(picture))
    expect(page.get_by_test_id("attachment-preview")).to_have_count(1)
    expect(page.get_by_test_id("send")).to_be_enabled()  # an image alone can be sent
    page.get_by_test_id("remove-attachment").click()
    expect(page.get_by_test_id("attachment-preview")).to_have_count(0)
    expect(page.get_by_test_id("send")).to_be_disabled()
