"""The calculator tool: arithmetic evaluated exactly, without eval.

    calculate("5-2+4")            -> "7"
    calculate("0.1 + 0.2")        -> "0.3"          (decimals are exact fractions, not floats)
    calculate("（1234+5678）÷3.5") -> "1974.85714286"
    calculate("17.5% * 2840")     -> "497"

The text is parsed with `ast.parse(mode="eval")` and walked over an allow-list of nodes: numbers,
+ - * / // % ** (also × ÷ ^ and full-width forms), unary signs, parentheses, the constants pi and
e, and the functions in FUNCTIONS. Rational arithmetic stays exact (`Fraction`; integers are
Python's big integers); functions like sqrt or sin give floats, shown to 12 significant digits.
Limits keep a request from eating the server: 500 characters, nesting depth 50, results of at most
10,000 digits (checked before a power is computed), factorial up to 1000.
"""

import ast
import math
import re
import unicodedata
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

MAX_LENGTH = 500
MAX_DEPTH = 50
MAX_DIGITS = 10_000
MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1
MAX_FACTORIAL = 1000
SIGNIFICANT = 12

Number = Fraction | float


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate (the message says why)."""


def _real(x: Number) -> float:
    try:
        return float(x)
    except OverflowError:
        raise CalculatorError("a number is too large for this function") from None


def _integer(x: Number, what: str) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise CalculatorError(f"{what} needs a whole number, not {format_number(x)}")
        x = Fraction(x)
    if x.denominator != 1:
        raise CalculatorError(f"{what} needs a whole number, not {format_number(x)}")
    return x.numerator


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise CalculatorError("sqrt of a negative number")
    if isinstance(x, Fraction):
        n, d = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if n * n == x.numerator and d * d == x.denominator:
            return Fraction(n, d)  # sqrt(16) is 4 exactly, sqrt(0.25) is 0.5
    return math.sqrt(_real(x))


def _round(x: Number, digits: Number = Fraction(0)) -> Number:
    """Halves round away from zero (as on a calculator; Python's round rounds them to even)."""
    places = _integer(digits, "round's digits")
    if abs(places) > 100:
        raise CalculatorError("round takes at most 100 digits")
    scale = Fraction(10) ** places
    x = Fraction(x)
    rounded = Fraction(math.floor(abs(x) * scale + Fraction(1, 2))) / scale
    return rounded if x >= 0 else -rounded


def _factorial(x: Number) -> Fraction:
    n = _integer(x, "factorial")
    if n < 0:
        raise CalculatorError("factorial of a negative number")
    if n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial is limited to {MAX_FACTORIAL}! (asked for {n}!)")
    return Fraction(math.factorial(n))


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalculatorError("log needs a positive number (and a positive base other than 1)")
    if isinstance(x, Fraction) and x.denominator == 1:  # big integers without a float overflow
        value = math.log(x.numerator)
    else:
        value = math.log(_real(x))
    return value / math.log(_real(base)) if base is not None else value


def _float_function(f):
    def call(x: Number) -> float:
        try:
            return f(_real(x))
        except ValueError:
            raise CalculatorError(f"{f.__name__} is not defined for {format_number(x)}") from None

    return call


FUNCTIONS = {
    "sqrt": (_sqrt, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "floor": (lambda x: Fraction(math.floor(x)), 1, 1), "ceil": (lambda x: Fraction(math.ceil(x)), 1, 1),
    "log": (_log, 1, 2), "ln": (_log, 1, 1), "log10": (lambda x: _log(x, Fraction(10)), 1, 1),
    "lg": (lambda x: _log(x, Fraction(10)), 1, 1), "log2": (lambda x: _log(x, Fraction(2)), 1, 1),
    "exp": (_float_function(math.exp), 1, 1), "sin": (_float_function(math.sin), 1, 1),
    "cos": (_float_function(math.cos), 1, 1), "tan": (_float_function(math.tan), 1, 1),
    "asin": (_float_function(math.asin), 1, 1), "acos": (_float_function(math.acos), 1, 1),
    "atan": (_float_function(math.atan), 1, 1), "min": (min, 1, 100), "max": (max, 1, 100),
    "factorial": (_factorial, 1, 1),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "π": math.pi}

# Characters people (and models) type for operators; NFKC already maps full-width ones
# (（）＋－＊／％＾，and full-width digits) to ASCII.
REPLACE = {"×": "*", "÷": "/", "−": "-", "–": "-", "·": "*", "⋅": "*", "^": "**", "√": "sqrt"}
# A % that no operand follows is a percent sign (17.5% * 2840); before an operand it is modulo (10 % 3).
PERCENT = re.compile(r"%(?!\s*[\w.(])")


def normalize(expression: str) -> str:
    text = unicodedata.normalize("NFKC", expression)
    for old, new in REPLACE.items():
        text = text.replace(old, new)
    return PERCENT.sub("/100", text)


def evaluate(expression: str) -> Number:
    """The value of `expression` (a Fraction when exact, else a float)."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("the expression is empty")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"the expression is too long ({len(expression)} characters, the limit is {MAX_LENGTH})")
    text = normalize(expression)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        detail = e.msg if isinstance(e, SyntaxError) else "it is nested too deeply"
        raise CalculatorError(f"not an arithmetic expression ({detail}): {expression}") from None
    try:
        return _eval(tree.body, 0, text.strip())
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None


def calculate(expression: str) -> str:
    """`expression` evaluated and formatted (what the tool returns)."""
    return format_number(evaluate(expression))


OPERATORS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
}


def _eval(node: ast.AST, depth: int, text: str) -> Number:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"the expression is nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, not {node.value!r}")
        return _literal(node.value, ast.get_source_segment(text, node))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand, depth + 1, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, depth + 1, text), _eval(node.right, depth + 1, text)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        op = OPERATORS.get(type(node.op))
        if op is None:
            raise CalculatorError(f"the operator {type(node.op).__name__} is not supported")
        return _checked(op(left, right))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r} (constants: pi, e; functions: {', '.join(FUNCTIONS)})")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise CalculatorError(f"unknown function {name!r} (functions: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise CalculatorError("functions take plain arguments, not keywords")
        function, least, most = FUNCTIONS[node.func.id]
        if not least <= len(node.args) <= most:
            raise CalculatorError(f"{node.func.id} takes {least if least == most else f'{least} to {most}'} "
                                  f"argument{'s' if most > 1 else ''}, not {len(node.args)}")
        args = [_eval(a, depth + 1, text) for a in node.args]
        return _checked(function(*args))
    raise CalculatorError(f"{type(node).__name__} is not allowed in a calculation (only numbers, operators, "
                          "parentheses and the listed functions)")


def _literal(value: int | float, written: str | None) -> Number:
    """A number as written, exactly: 0.1 is 1/10 (not the float nearest to it)."""
    if isinstance(value, int):
        return Fraction(value)
    written = (written or "").replace("_", "")
    power = re.search(r"[eE]([+-]?\d+)$", written)
    if power and abs(int(power.group(1))) > MAX_DIGITS:
        raise CalculatorError(f"the number {written} has more than {MAX_DIGITS} digits")
    try:
        return _checked(Fraction(written))
    except (ValueError, ZeroDivisionError):
        if not math.isfinite(value):
            raise CalculatorError("the number is too large") from None
        return Fraction(repr(value))


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
        n = exponent.numerator
        if base == 0 and n < 0:
            raise ZeroDivisionError
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if abs(base) != 1 and base != 0 and abs(n) * max(size - 1, 1) > MAX_BITS:
            raise CalculatorError(f"the result would have more than {MAX_DIGITS} digits")
        return base**n
    if base < 0:
        raise CalculatorError("a negative number to a fractional power is not a real number")
    if base == 0:
        return Fraction(0) if exponent > 0 else 1 / Fraction(0)
    if isinstance(exponent, Fraction) and exponent.numerator.bit_length() > 64:
        raise CalculatorError("the exponent is too large")
    try:
        return _real(base) ** _real(exponent)
    except OverflowError:
        raise CalculatorError("the result is too large") from None


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is too large")
    elif isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
            raise CalculatorError(f"the result would have more than {MAX_DIGITS} digits")
    else:  # a function that gave a plain int (math.floor does): keep it exact
        value = Fraction(value)
    return value


def format_number(value: Number) -> str:
    """Integers in full; other exact values as exact decimals when short (0.3), else, like floats,
    to 12 significant digits without float noise (0.30000000000000004 -> 0.3)."""
    if isinstance(value, Fraction):
        if value.denominator == 1:  # through Decimal: str() of an int stops at 4300 digits
            return format(Decimal(value.numerator), "f")
        d = value.denominator
        for p in (2, 5):
            while d % p == 0:
                d //= p
        if d == 1:  # a terminating decimal: exact when it is short enough to read
            exact = Context(prec=2 * MAX_DIGITS).divide(Decimal(value.numerator), Decimal(value.denominator))
            if len(exact.normalize().as_tuple().digits) <= 20:
                return _plain(exact)
            value = exact
        else:
            value = Context(prec=SIGNIFICANT + 5).divide(Decimal(value.numerator), Decimal(value.denominator))
    number = Decimal(repr(value)) if isinstance(value, float) else value
    if number == 0:
        return "0"
    rounded = Context(prec=SIGNIFICANT, rounding=ROUND_HALF_EVEN).plus(number)
    return _plain(rounded)


def _plain(number: Decimal) -> str:
    """Decimal notation without trailing zeros; scientific only for very large or small values."""
    number = number.normalize()
    exponent = number.adjusted()
    if -7 <= exponent < 21:
        text = format(number, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return format(number, "e")
