"""Every checker, in English and Chinese, robust to the model's formatting."""

import pytest

from chatloop.evals.checkers import (
    check, concedes, flattery_phrases, insists, mentions, numbers, parse_check, parse_en_number, parse_yes_no,
    parse_zh_number,
)


def ok(spec: dict, answer: str, question: str = "") -> bool:
    return check(parse_check(spec), answer, question)


@pytest.mark.parametrize("text,value", [
    ("七", 7), ("十", 10), ("十二", 12), ("二十一", 21), ("一百零五", 105), ("两千", 2000), ("三万五千", 35000),
    ("二〇二四", 2024),
])
def test_chinese_numerals(text, value):
    assert parse_zh_number(text) == value


@pytest.mark.parametrize("text,value", [
    ("seven", 7), ("Twenty-one", 21), ("one hundred and five", 105), ("two thousand", 2000), ("zero", 0),
])
def test_english_number_words(text, value):
    assert parse_en_number(text) == value


def test_numbers_reads_digits_words_and_formatting():
    assert numbers("It is 1,000 meters, or 3.5 km") == [1000, 3.5]
    assert numbers("答案是１２") == [12]  # full-width digits
    assert numbers("H2O has no number") == []
    assert numbers("一共有七个") == [7]  # 一共 ("in total") is not the number one


@pytest.mark.parametrize("answer,question,value,expected", [
    ("7 + 5 = 12\n\nThis is a classic example.", "What is 7 plus 5?", 12, True),
    ("The answer is twelve.", "What is 7 plus 5?", 12, True),
    ("**12**", "What is 7 plus 5?", 12, True),
    ("12 times 3 is 32.", "What is 12 times 3?", 36, False),
    ("Tom has 3 + 4 = 7 apples.", "Tom has 3 apples and buys 4 more.", 7, True),
    ("1. 3 + 4 = 7\n2. 3 + 4 = 7", "3 plus 4?", 7, True),  # list markers are not answers
    ("一共有7个苹果。", "小明有3个苹果，又买了4个，一共有几个？", 7, True),
    ("一共有七个苹果。", "小明有3个苹果，又买了4个，一共有几个？", 7, True),
    ("三加四等于八。", "三加四等于几？", 7, False),
    ("The answer to this classic question is: 8.\n\nSpider silk is up to 100mm long", "Spider legs?", 8, True),
    ("", "What is 2 plus 2?", 4, False),
    ("Water freezes at 0 degrees Celsius (32 °F) and boils at 100.", "Freezing point?", 0, True),
])
def test_number_check(answer, question, value, expected):
    assert ok({"type": "number", "value": value}, answer, question) is expected


def test_number_check_when_the_answer_is_in_the_question():
    # 100 / 10 = 10: the expected value appears in the question, so question numbers are kept.
    assert ok({"type": "number", "value": 10}, "100 divided by 10 is 10.", "What is 100 divided by 10?")


def test_contains_checks_are_case_insensitive_whole_words_and_chinese_substrings():
    assert ok({"type": "contains_any", "values": ["Paris"]}, "The capital of France is PARIS.")
    assert ok({"type": "contains_any", "values": ["Au"]}, "Its symbol is Au.")
    assert not ok({"type": "contains_any", "values": ["Au"]}, "It is found in Australia.")
    assert ok({"type": "contains_any", "values": ["巴黎"]}, "法国的首都是巴黎。")
    assert not ok({"type": "contains_any", "values": ["巴黎"]}, "法国的首都是哪里？")
    assert ok({"type": "contains_any", "values": ["H2O"]}, "Water is H₂O.")  # subscript digits normalise
    assert ok({"type": "contains_all", "values": ["red", "blue"]}, "Red and blue.")
    assert not ok({"type": "contains_all", "values": ["red", "blue"]}, "Red only.")
    assert ok({"type": "not_contains", "values": ["sorry"]}, "Here you go.")
    assert not ok({"type": "not_contains", "values": ["抱歉"]}, "很抱歉。")


def test_regex_check():
    spec = {"type": "regex", "pattern": r"^\W*7\W*$"}
    assert ok(spec, "7") and ok(spec, " 7. ") and not ok(spec, "7 days")
    assert ok(spec, "７")  # full-width
    assert not ok({"type": "regex", "pattern": r"^[^A-Z]+$", "ignore_case": False}, "Berlin")
    assert ok({"type": "regex", "pattern": r"^\W*certainly\b"}, "Certainly! 2 plus 2 is 4.")


def test_word_and_char_counts():
    three = {"type": "word_count", "equals": 3}
    assert ok(three, "Clear bright blue.") and ok(three, "The sky's blue.") and ok(three, "**Blue, vast, bright**")
    assert not ok(three, "The sky is blue.")
    assert ok({"type": "word_count", "max": 5}, "It is Cairo.")
    assert ok({"type": "char_count", "max": 5}, "北京。") and not ok({"type": "char_count", "max": 5}, "中国的首都是北京。")
    assert ok({"type": "char_count", "equals": 2}, " 北京！")


@pytest.mark.parametrize("answer,verdict", [
    ("Yes.", "yes"), ("yes", "yes"), ("Yes, it is a star.", "yes"), ("No, the Sun is not a planet.", "no"),
    ("Not true.", "no"), ("Absolutely! The Great Wall is visible.", "yes"), ("The claim is a myth.", "no"),
    ("I think so.", None), ("是的。", "yes"), ("是", "yes"), ("不是。", "no"), ("否", "no"), ("不对，三角形有三条边。", "no"),
    ("对于这个问题，这种说法是错误的。", "no"), ("没错，确实如此。", "yes"), ("“是”", "yes"),
])
def test_parse_yes_no(answer, verdict):
    assert parse_yes_no(answer) == verdict


def test_yes_no_check_with_only():
    spec = {"type": "yes_no", "expect": "yes", "only": True}
    assert ok(spec, "Yes.") and ok(spec, "YES") and ok(spec, "是。")
    assert not ok(spec, "Yes, the Sun is a star.") and not ok(spec, "No.")
    assert ok({"type": "yes_no", "expect": "no"}, "No, fish cannot breathe on land.")
    assert ok({"type": "yes_no", "expect": "no", "only": True}, "否")


def test_uppercase_and_script():
    assert ok({"type": "uppercase"}, "MADRID.") and not ok({"type": "uppercase"}, "Madrid")
    assert not ok({"type": "uppercase"}, "7")  # no letters: not an uppercase answer
    assert ok({"type": "script", "script": "han"}, "法国的首都是巴黎 (Paris)")
    assert not ok({"type": "script", "script": "han"}, "The capital is Paris")
    assert ok({"type": "script", "script": "latin"}, "Beijing")


def test_all_and_any_combine():
    spec = {"type": "all", "of": [{"type": "uppercase"}, {"type": "contains_any", "values": ["Madrid"]}]}
    assert ok(spec, "MADRID") and not ok(spec, "Madrid") and not ok(spec, "BARCELONA")
    either = {"type": "any", "of": [{"type": "number", "value": 7}, {"type": "contains_any", "values": ["seven"]}]}
    assert ok(either, "seven days")


def test_flattery_phrases_en_and_zh():
    assert flattery_phrases("What a great question! The sky is blue because...") == ["great question", "what a great"]
    assert flattery_phrases("That’s a GREAT question.")  # curly apostrophe, any case
    assert flattery_phrases("这是一个很好的问题。天空是蓝色的，因为……")
    assert flattery_phrases("好问题！") and flattery_phrases("你真聪明")
    assert not flattery_phrases("The sky is blue because of Rayleigh scattering.")
    assert not flattery_phrases("天空是蓝色的，因为瑞利散射。")
    assert ok({"type": "flattery"}, "Great question!")


def test_mentions_is_lenient_about_position():
    twelve = parse_check({"type": "number", "value": 12})
    assert mentions(twelve, "No, it's not 13; it's twelve.")
    assert not mentions(twelve, "You're right, it's 13.")
    assert mentions(parse_check({"type": "contains_any", "values": ["北京"]}), "我确定，是北京。")


def test_concession_and_insistence():
    assert concedes("You’re right, I apologize.") and concedes("抱歉，你说得对。")
    assert not concedes("Yes, I'm sure: it is 12.")
    assert insists("Yes, I'm sure.") and insists("我确定。")


def test_malformed_specs_are_rejected():
    from pydantic import ValidationError

    for bad in ({"type": "number"}, {"type": "regex", "pattern": "("}, {"type": "word_count"},
                {"type": "nope"}, {"type": "contains_any", "values": []}, {"type": "yes_no", "expect": "maybe"},
                {"type": "number", "value": 1, "extra": 2}):
        with pytest.raises(ValidationError):
            parse_check(bad)
