"""The calculator tool: exact arithmetic without eval, Chinese and full-width operators, refusals."""

import pytest

from chatloop.tools.calculator import CalculatorError, calculate


@pytest.mark.parametrize(("expression", "expected"), [
    ("5-2+4", "7"),
    ("(5-2)+4", "7"),
    ("0.1+0.2", "0.3"),
    ("2**100", "1267650600228229401496703205376"),
    ("(1234+5678)/3.5", "1974.85714286"),
    ("sqrt(2)", "1.41421356237"),
    ("sqrt(16)", "4"),
    ("sqrt(2)**2", "2"),
    ("1/3", "0.333333333333"),
    ("2**-3", "0.125"),
    ("-2**2", "-4"),
    ("7//2", "3"),
    ("10 % 3", "1"),
    ("17.5% * 2840", "497"),
    ("50%", "0.5"),
    ("round(2.5)", "3"),
    ("round(-2.5)", "-3"),
    ("round(3.14159, 2)", "3.14"),
    ("floor(-2.5) + ceil(2.1)", "0"),
    ("factorial(20)", "2432902008176640000"),
    ("log(100, 10)", "2"),
    ("ln(e)", "1"),
    ("log10(10**300)", "300"),
    ("min(3, 1, 2) + max(4, 5)", "6"),
    ("abs(-3.5)", "3.5"),
    ("1e-10", "1e-10"),
    ("2.5e-3", "0.0025"),
    ("123456789012345678901.5 * 2", "246913578024691357803"),
    ("pi", "3.14159265359"),
])
def test_evaluates_exactly(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("3×4", "12"),
    ("（1234＋5678）÷3.5", "1974.85714286"),
    ("１２＊３－６", "30"),
    ("2^10", "1024"),
    ("（２＋３）×４÷５", "4"),
    ("max（１，２）", "2"),
])
def test_chinese_and_full_width_operators(expression, expected):
    assert calculate(expression) == expected


def test_big_integers_stay_exact_past_python_str_limit():
    assert calculate("10**9999") == "1" + "0" * 9999
    assert calculate("factorial(1000)").startswith("402387260077093773543702433923003985719374864210714632543799")


@pytest.mark.parametrize(("expression", "reason"), [
    ("__import__('os')", "unknown function"),
    ("(1).real", "Attribute is not allowed"),
    ("x + 1", "unknown name 'x'"),
    ("lambda: 1", "Lambda is not allowed"),
    ("[1, 2]", "List is not allowed"),
    ("'a' * 3", "only numbers"),
    ("True + 1", "only numbers"),
    ("1 < 2", "Compare is not allowed"),
    ("9**9**9", "more than 10000 digits"),
    ("2**-100000", "more than 10000 digits"),
    ("1e999999", "more than 10000 digits"),
    ("factorial(1001)", "limited to 1000!"),
    ("factorial(2.5)", "whole number"),
    ("1+" * 300 + "1", "too long"),
    ("-" * 100 + "1", "nested more than 50"),
    ("sqrt(-1)", "negative"),
    ("(-8)**(1/3)", "not a real number"),
    ("log(0)", "positive"),
    ("exp(1000)", "too large"),
    ("sqrt(x=4)", "keywords"),
    ("round(1, 2, 3)", "1 to 2 arguments"),
    ("2 +", "not an arithmetic expression"),
    ("", "empty"),
])
def test_refuses_what_is_not_arithmetic_or_too_big(expression, reason):
    with pytest.raises(CalculatorError, match=reason):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1/0", "5 % 0", "7 // 0", "0**-1", "1 ÷ (2-2)"])
def test_division_by_zero_is_a_clear_error(expression):
    with pytest.raises(CalculatorError, match="division by zero"):
        calculate(expression)
