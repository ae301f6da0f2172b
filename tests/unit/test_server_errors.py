"""Error responses: OpenAI's shape, and never a second failure while rendering one."""

import json

from chatloop.server.errors import error_response


def test_an_error_that_echoes_unencodable_text_still_renders():
    # a lone surrogate reaches a message when it echoes input that no strict parser has seen
    response = error_response(404, "the model '\ud800' does not exist", param="model", code="model_not_found")
    body = json.loads(response.body)
    assert response.status_code == 404 and body["error"]["param"] == "model"
    assert body["error"]["message"] == "the model '\ufffd' does not exist"
    assert body["error"]["type"] == "not_found_error"
