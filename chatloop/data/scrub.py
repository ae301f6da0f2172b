"""Scrubbing personal data and secrets out of text before it becomes training data.

    text, counts = scrub("mail me at bob@example.com or +1 415 555 2671")
    # -> "mail me at [email] or [phone]", {"email": 1, "phone": 1, "secret": 0}

Three kinds, each replaced by a placeholder:

- `email`: addresses like `name@example.co.uk` (not `icon@2x.png`, not `git@host` of an SSH remote).
- `phone`: international numbers (`+44 20 7946 0958`, `+8613800138000`, `0086 ...`), North American
  numbers with separators (`(415) 555-2671`, `1-800-555-0199`), Chinese mobiles (`13800138000`,
  `138-0013-8000`) and national numbers with a trunk 0 (`010-12345678`, `020 7946 0958`,
  `01 23 45 67 89`, `03-1234-5678`). Ordinary numbers stay: years, dates, prices, decimals, IP
  addresses, version numbers, and numbers next to an arithmetic operator (`= 13703703579`).
- `secret`: our API keys (`cl-...`), `sk-`/`rk-` style keys, AWS access key ids (`AKIA...`),
  GitHub (`ghp_...`, `github_pat_...`), Slack, Google and Hugging Face tokens, JWTs, bearer tokens
  and `Authorization:` header values, PEM private keys, and long high-entropy hex or base64
  strings (32+ characters that look random: mixed character classes, high Shannon entropy).

Secrets are replaced first, then e-mail addresses, then phone numbers, so a digit run inside a key
is never mistaken for a phone number. `scrub` is idempotent: the placeholders match nothing.
Matching is ASCII-only at the edges, so an address or number written straight after Chinese text
(`邮箱是bob@example.com`, `电话13800138000`) is still found.
"""

import math
import re
from collections import Counter
from collections.abc import Callable

KINDS = ("email", "phone", "secret")
PLACEHOLDER = {kind: f"[{kind}]" for kind in KINDS}


def _re(pattern: str, flags: int = 0) -> re.Pattern:
    """ASCII classes, so that Chinese text next to a match is a boundary (`是bob@example.com`)."""
    return re.compile(pattern, flags | re.ASCII)


# --- secrets ------------------------------------------------------------------------------------

_KEY_CHARS = r"[A-Za-z0-9_\-]"
# Patterns whose whole match is a secret, in the order they are tried.
_SECRET_PATTERNS = [
    _re(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    _re(r"\bcl-" + _KEY_CHARS + r"{20,}"),  # chatloop API keys: cl- + token_urlsafe(32)
    _re(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    _re(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    _re(r"\bA(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[0-9A-Z]{16}\b"),
    _re(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    _re(r"\bAIza[0-9A-Za-z_\-]{35}"),
    _re(r"\bhf_[A-Za-z0-9]{30,}\b"),
    _re(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
]
# `sk-...` style keys: accepted only when the tail has a digit (not `sk-learn-compatible-...`).
_SK_KEY = _re(r"\b(?:sk|rk)[-_]" + _KEY_CHARS + r"{20,}")
# A credential after an auth scheme; the scheme word is kept.
_SCHEMES = r"(?:bearer|basic|token|bot)"
_AUTH_HEADER = _re(r"(?i)(\bauthorization\s*:\s*(?:" + _SCHEMES + r"\s+)?)(?!" + _SCHEMES + r"\b)"
                   r"([A-Za-z0-9._~+/\-]{8,}=*)")
_BEARER = _re(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/\-]{16,}=*)")
# Long random-looking strings (checked by `_looks_random`).
_HEX = _re(r"(?<![A-Za-z0-9+/_\-])[0-9a-fA-F]{32,}(?![A-Za-z0-9+/_\-])")
_B64 = _re(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9+/_\-=])")


def _credential(s: str) -> bool:
    """A header value that is a credential, not prose (`Authorization: required`)."""
    return any(c.isdigit() for c in s) or s.endswith("=") or (len(s) >= 16 and s != s.lower())


def _entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


_WORDS = _re(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def _mean_word(s: str) -> float:
    """Mean length of the words (`get`, `User`, `HTTP`, `42`) a string splits into: under 2 for
    random base64, about 4 or more for identifiers, paths and SQL."""
    words = _WORDS.findall(s)
    return sum(map(len, words)) / max(1, len(words))


def _looks_random(s: str, hex_only: bool) -> bool:
    core = s.rstrip("=")
    has_digit, has_lower, has_upper = (any(c.isdigit() for c in core), any(c.islower() for c in core),
                                       any(c.isupper() for c in core))
    if hex_only:  # 32+ hex digits: a key, token or digest unless it is as regular as deadbeefdeadbeef...
        return has_digit and (has_lower or has_upper) and _entropy(core) >= 3.0
    if not has_upper and not core.isalnum():
        return False  # lower case with / _ - +: a path or a snake_case name (x86_64-linux-gnu/libstdc)
    return has_digit + has_lower + has_upper >= 2 and _entropy(core) >= 3.8 and _mean_word(core) < 3.5


# --- e-mail ---------------------------------------------------------------------------------------

_EMAIL = _re(
    r"(?<![A-Za-z0-9._%+\-])([A-Za-z0-9][A-Za-z0-9._%+\-]{0,63})@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
)
_NOT_EMAIL_LOCAL = {"git"}  # git@github.com:owner/repo.git is a remote, not a person


def _is_email(m: re.Match) -> bool:
    local, domain = m.group(1), m.group(2)
    return local.lower() not in _NOT_EMAIL_LOCAL and not re.match(r"\d+x\.", domain)  # icon@2x.png


# --- phone numbers --------------------------------------------------------------------------------

_PHONE_PATTERNS = [
    # International: +CC or 00CC, then groups of digits (parentheses allowed: +49 (0)30 ...).
    _re(r"(?<![A-Za-z0-9+])(?:\+|00(?=[1-9]))[1-9]\d{0,3}(?:[ .\-]?\(\d{1,4}\)|[ .\-]?\d{1,5}){1,6}(?!\d)"),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-0199.
    _re(r"(?<![A-Za-z0-9.\-])(?:1[ .\-])?(?:\(\d{3}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?![0-9]|[.\-]\d)"),
    # Chinese mobiles: 13800138000, 138-0013-8000, 138 0013 8000.
    _re(r"(?<![A-Za-z0-9.\-])1[3-9]\d(?:[ \-]?\d{4}){2}(?![0-9]|[.\-]\d)"),
    # National numbers with a trunk 0: 010-12345678, (010) 1234 5678, 020 7946 0958, 01 23 45 67 89.
    _re(r"(?<![A-Za-z0-9.,\-])(?:\(0\d{1,4}\)\s?|0\d{1,4}[ .\-])\d{2,8}(?:[ .\-]\d{2,8}){0,3}"
        r"(?![0-9]|[.\-]\d)"),
]
# A number just after `=`, a currency sign or `3 *`, or just before `=`, `%` or `* 3`, is a result or a price.
_MATH_BEFORE = _re(r"(?:[=≈≠$¥€£]|[\d)]\s*[+\-*/×÷^])\s*$")
_DOTTED = _re(r"\d{1,3}(?:\.\d{1,3}){2,}")
_MATH_AFTER = _re(r"\s*(?:[=≈≠%]|[+\-*/×÷^]\s*[\d(])")


def _is_phone(m: re.Match) -> bool:
    text, number = m.string, m.group(0)
    digits = sum(c.isdigit() for c in number)
    if not 9 <= digits <= 15:
        return False
    if (_MATH_BEFORE.search(text, max(0, m.start() - 16), m.start()) and not number.startswith("+")) \
            or _MATH_AFTER.match(text, m.end()):
        return False  # an arithmetic answer or a price, not a phone number
    return not _DOTTED.fullmatch(number)  # an IP address or a version number is not one either


# --- the scrubber ---------------------------------------------------------------------------------

def _sub(pattern: re.Pattern, text: str, kind: str, counts: Counter,
         accept: Callable[[re.Match], bool] | None = None, group: int = 0) -> str:
    def replace(m: re.Match) -> str:
        if accept is not None and not accept(m):
            return m.group(0)
        counts[kind] += 1
        if group:  # only that group is the secret: `Authorization: Bearer [secret]`
            whole, start = m.group(0), m.start()
            return whole[: m.start(group) - start] + PLACEHOLDER[kind] + whole[m.end(group) - start:]
        return PLACEHOLDER[kind]

    return pattern.sub(replace, text)


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """`text` with e-mail addresses, phone numbers and secrets replaced by `[email]`, `[phone]`
    and `[secret]`, and how many of each were replaced."""
    counts: Counter = Counter()
    if any(c.isalnum() for c in text):
        for pattern in _SECRET_PATTERNS:
            text = _sub(pattern, text, "secret", counts)
        text = _sub(_SK_KEY, text, "secret", counts, lambda m: any(c.isdigit() for c in m.group(0)[3:]))
        text = _sub(_AUTH_HEADER, text, "secret", counts, lambda m: _credential(m.group(2)), group=2)
        text = _sub(_BEARER, text, "secret", counts, lambda m: any(c.isdigit() for c in m.group(2)), group=2)
        text = _sub(_HEX, text, "secret", counts, lambda m: _looks_random(m.group(0), True))
        text = _sub(_B64, text, "secret", counts, lambda m: _looks_random(m.group(0), False))
        text = _sub(_EMAIL, text, "email", counts, _is_email)
        for pattern in _PHONE_PATTERNS:
            text = _sub(pattern, text, "phone", counts, _is_phone)
    return text, {kind: counts[kind] for kind in KINDS}


def scrub_text(text: str) -> str:
    return scrub(text)[0]
