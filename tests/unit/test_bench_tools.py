"""`bench tools` scoring: the right tool with schema-valid arguments counts, anything else does not."""

from chatloop.bench.tools import NO_TOOL_PROMPTS, TOOL_PROMPTS, score


def call(name: str, arguments: str) -> dict:
    return {"calls": [(name, arguments)], "content": "", "finish": "tool_calls"}


def test_only_the_right_tool_with_valid_arguments_counts():
    text = {"calls": [], "content": "Sure!", "finish": "stop"}
    right = [call(tool, {"get_weather": '{"city": "Rome"}', "get_time": '{"tz": "UTC"}',
                         "calculator": '{"expression": "1+1"}', "search_web": '{"query": "news"}',
                         "send_email": '{"to": "a@b.c", "subject": "s", "body": "b"}',
                         "convert_currency": '{"amount": 5, "from": "USD", "to": "EUR"}'}[tool])
             for _, tool in TOOL_PROMPTS]
    wrong = list(right)
    wrong[0] = call("get_weather", '{"town": "Rome"}')  # not the schema's argument
    wrong[5] = call("get_weather", '{"city": "Rome"}')  # a get_time prompt answered with get_weather
    wrong[25] = call("convert_currency", '{"amount": "5", "from": "USD", "to": "EUR"}')  # amount not a number
    plain = [text] * (len(NO_TOOL_PROMPTS) - 3) + [call("search_web", '{"query": "x"}')] * 3
    report = score({"non_streamed": right, "streamed": wrong},
                   {"non_streamed": [text] * len(NO_TOOL_PROMPTS), "streamed": plain})
    assert report["non_streamed"] == {"right_tool_valid_args": 1.0, "called_without_need": 0.0}
    assert report["streamed"] == {"right_tool_valid_args": round(27 / 30, 3), "called_without_need": 0.2}
    assert report["stream_agreement"] == round((45 - 3 - 3) / 45, 3)  # 3 tool and 3 no-tool answers differ
