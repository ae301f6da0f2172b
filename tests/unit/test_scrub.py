"""Scrubbing before export: e-mail addresses, phone numbers and secrets become placeholders, in
English and Chinese text, while ordinary numbers, code and identifiers stay as they were."""

import base64
import random
import string

import pytest

from chatloop.data.scrub import scrub, scrub_text

OUR_KEY = "cl-" + "Zx9_kQ2-mN7pR4tV8wY1bC3dF6gH0jL5sA2eU9iO4uT"  # the shape of accounts.new_api_key()


@pytest.mark.parametrize("text, expected", [
    ("Write to bob@example.com please", "Write to [email] please"),
    ("<alice.smith+news@mail.example.co.uk>", "<[email]>"),
    ("Email: A.B-C@sub.domain.io, thanks", "Email: [email], thanks"),
    ("我的邮箱是zhang.san@example.cn，谢谢", "我的邮箱是[email]，谢谢"),
    ("写信给 li_si@qq.com 吧。", "写信给 [email] 吧。"),
])
def test_email_addresses_are_scrubbed(text, expected):
    assert scrub(text) == (expected, {"email": 1, "phone": 0, "secret": 0})


@pytest.mark.parametrize("text, expected", [
    ("Call +1 415 555 2671 now", "Call [phone] now"),
    ("London: +44 20 7946 0958.", "London: [phone]."),
    ("Berlin +49 (0)30 123456", "Berlin [phone]"),
    ("Paris +33 1 23 45 67 89", "Paris [phone]"),
    ("+1-415-555-2671", "[phone]"),
    ("office (415) 555-2671", "office [phone]"),
    ("cell 415-555-2671 - ask for Bob", "cell [phone] - ask for Bob"),
    ("Tel. 415.555.2671.", "Tel. [phone]."),
    ("toll-free 1-800-555-0199", "toll-free [phone]"),
    ("UK 020 7946 0958 or 07700 900123", "UK [phone] or [phone]"),
    ("Tokyo 03-1234-5678", "Tokyo [phone]"),
    ("电话：+86 138 0013 8000。", "电话：[phone]。"),
    ("我的手机13800138000，有事打给我", "我的手机[phone]，有事打给我"),
    ("手机 138-0013-8000 或 138 0013 8000", "手机 [phone] 或 [phone]"),
    ("拨打021-87654321咨询", "拨打[phone]咨询"),
    ("北京 (010) 1234 5678，深圳 0755-12345678", "北京 [phone]，深圳 [phone]"),
    ("国际拨号 0086 138 0013 8000", "国际拨号 [phone]"),
])
def test_phone_numbers_are_scrubbed(text, expected):
    scrubbed, counts = scrub(text)
    assert scrubbed == expected
    assert counts == {"email": 0, "phone": expected.count("[phone]"), "secret": 0}


@pytest.mark.parametrize("text, expected", [
    (f"my key is {OUR_KEY}", "my key is [secret]"),
    (f"密钥是{OUR_KEY}，别告诉别人", "密钥是[secret]，别告诉别人"),
    ("OPENAI_API_KEY=sk-proj-abc123DEF456ghi789JKL012mno345", "OPENAI_API_KEY=[secret]"),
    ("stripe sk_live_51H8abcdefghijklmnopqrstuv", "stripe [secret]"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_access_key_id = [secret]"),
    ("token ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "token [secret]"),
    ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer [secret]"),
    (f"curl -H 'Authorization: Bearer {OUR_KEY}'", "curl -H 'Authorization: Bearer [secret]'"),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "curl -H 'Authorization: Basic [secret]'"),
    (("use bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
      "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
     "use bearer [secret]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nthat's it",
     "[secret]\nthat's it"),
    ("secret 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 here", "secret [secret] here"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key=[secret]"),
    ("令牌：Q2hhdGxvb3BTZWNyZXQ9MTIzNDU2Nzg5MGFiY2RlZg==。", "令牌：[secret]。"),
])
def test_secrets_are_scrubbed(text, expected):
    assert scrub(text) == (expected, {"email": 0, "phone": 0, "secret": 1})


@pytest.mark.parametrize("text", [
    # numbers that are not phone numbers
    "In 2024 we shipped 1999-2024 releases", "on 2024-05-31 at 12:30:45, or 2024/05/31",
    "05-31-2024 and 01.02.2024",
    "It costs $1,234.56 or ¥12,800 or €99.99", "1 234 567 people; population 1 400 000 000",
    "123 + 456 = 579", "12345 × 6789 = 83810205", "2^32 = 4294967296", "123456789 × 111 = 13703703579",
    "13800138000 % 7 = 5", "the sum is 13,800,138,000", "pi ≈ 3.14159265358979", "0.5 0.25 0.125",
    "ping 192.168.100.200 or 10.0.0.1", "version 1.22.333.4444", "ISBN 978-3-16-148410-0", "Order 12345678",
    "时间是2024年5月31日，价格￥3999。", "计算：1+2+3+...+100=5050", "答案：123456789×111=13703703579",
    # addresses that are not a person's
    "icon@2x.png and logo@3x.jpg", "git clone git@github.com:owner/repo.git", "ssh user@localhost",
    "@property def name", "npm i react@18.2.0", "a @ b",
    # identifiers, paths and prose that only look long
    "sk-learn-compatible-estimators-list", "AbstractSingletonProxyFactoryBean2Impl",
    "getUserById2FactorAuthenticationTokenV2", "https://github.com/owner/repo/blob/main/src/Module2Test.py",
    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "transformers/models/llama/modeling_llama.py",
    "SELECT_ALL_FROM_users_WHERE_id_EQUALS_42_AND_Name", "my_long_variable_name_for_testing_purposes_v2",
    "Pneumonoultramicroscopicsilicovolcanoconiosis", "id 123e4567-e89b-12d3-a456-426614174000",
    "deadbeefdeadbeefdeadbeefdeadbeef", "Bearer authentication is a scheme", "Authorization: required",
    "send the Authorization: Bearer header", "这是一个很长的中文句子，没有任何个人信息，也没有密钥。",
])
def test_ordinary_text_is_left_alone(text):
    assert scrub(text) == (text, {"email": 0, "phone": 0, "secret": 0})


def test_random_tokens_are_secrets():
    rng = random.Random(0)
    for _ in range(300):
        raw = bytes(rng.randrange(256) for _ in range(rng.choice((24, 30, 32, 48))))
        urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        for token in (raw.hex(), base64.b64encode(raw).decode(), urlsafe):
            assert scrub_text(f"value {token} end") == "value [secret] end", token


def test_mixed_text_counts_each_kind_and_is_idempotent():
    text = (f"Hi, I'm Bob (bob@example.com, +1 415 555 2671). Key: {OUR_KEY}. 2 + 2 = 4, in 2024.\n"
            "我的电话是13800138000，邮箱 li@example.cn，密钥 AKIAIOSFODNN7EXAMPLE。")
    scrubbed, counts = scrub(text)
    assert scrubbed == ("Hi, I'm Bob ([email], [phone]). Key: [secret]. 2 + 2 = 4, in 2024.\n"
                        "我的电话是[phone]，邮箱 [email]，密钥 [secret]。")
    assert counts == {"email": 2, "phone": 2, "secret": 2}
    assert scrub(scrubbed) == (scrubbed, {"email": 0, "phone": 0, "secret": 0})


def test_empty_and_non_latin_text():
    assert scrub("") == ("", {"email": 0, "phone": 0, "secret": 0})
    assert scrub_text("".join(string.punctuation)) == string.punctuation
