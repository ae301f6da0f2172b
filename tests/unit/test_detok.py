"""Streaming text: UTF-8-safe deltas (Chinese, emoji) and stop strings across deltas."""

from chatloop.engine.detok import IncrementalDetokenizer, StopMatcher

MIXED = "你好，世界！Hello 🌍🎉 café — 北京欢迎你 👩‍💻"


def test_streamed_deltas_never_split_a_character(tokenizer):
    ids = tokenizer(MIXED, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(MIXED) // 3  # byte-level BPE splits these characters across tokens
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == MIXED


def test_flush_drops_an_unfinished_character(tokenizer):
    ids = tokenizer("🌍", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.push(ids[0]) == ""
    assert detok.flush() == ""


def test_stop_string_split_across_deltas():
    m = StopMatcher(("END",))
    out = []
    for delta in ["Hello wor", "ld E", "N", "D and more"]:
        text, stopped = m.feed(delta)
        out.append(text)
        if stopped:
            break
    assert stopped and "".join(out) == "Hello world " and m.text == "Hello world "


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    m = StopMatcher(("STOP",))
    first, _ = m.feed("go ST")
    assert first == "go "
    second, stopped = m.feed("ART now")
    assert not stopped and first + second + m.finish() == "go START now"


def test_earliest_of_several_stops_wins():
    m = StopMatcher(("b", "xyz"))
    text, stopped = m.feed("axyzb")
    assert stopped and text == "a"


def test_what_is_held_back_is_the_longest_end_that_begins_a_stop():
    m = StopMatcher(("abab", "bax", "q"))
    assert m.feed("xxaba") == ("xx", False)  # "aba" begins "abab" (and "ba" begins "bax")
    assert m.feed("b!") == ("", True) and m.text == "xx"
    m = StopMatcher(("aab",))
    assert m.feed("aaaa") == ("aa", False)  # only "aa" can begin "aab"


def test_long_stop_strings_cost_what_the_text_does():
    """Each token's check looks at the text's end only where a stop string's first character is:
    four stop strings of 250,000 characters had taken ~40 ms a token (a request could stall the
    engine's other sequences)."""
    m = StopMatcher(tuple("x" * 250_000 + str(i) for i in range(4)))
    for _ in range(2000):
        assert not m.feed("hello x")[1]
    assert m.finish() == "x" and len(m.text) == 2000 * 7


def test_no_stops_passes_text_through():
    m = StopMatcher(())
    assert m.feed("abc") == ("abc", False) and m.finish() == ""


def test_tool_call_markers_of_the_format_survive_other_special_tokens_are_dropped(family_tokenizer):
    from chatloop.engine.detok import skipped_ids
    from chatloop.models.tool_calls import tool_format

    for family, marker in [("mistral", "[TOOL_CALLS]"), ("llama3.1", "<|python_tag|>"), ("qwen2.5", "<tool_call>")]:
        tok = family_tokenizer(family)
        text = f"{marker}" + '{"city": "北京 🌍"}'
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert tok.convert_tokens_to_ids(marker) == ids[0]  # one (added) token
        detok = IncrementalDetokenizer(tok, skipped_ids(tok, tool_format(tok).markers))
        deltas = [detok.push(i) for i in ids] + [detok.flush()]
        assert all("\ufffd" not in d for d in deltas)
        assert "".join(deltas) == text  # the marker kept, the end-of-text token dropped
        plain = IncrementalDetokenizer(tok)
        dropped = "".join([plain.push(i) for i in ids] + [plain.flush()])
        assert dropped == (text if family == "qwen2.5" else text[len(marker):])  # Qwen's tags are not special


def test_token_pieces_bytes_add_up_to_the_text(tokenizer):
    """Each token's bytes, joined, are the text's UTF-8 (a multibyte character split across tokens
    included); a piece that is not text alone is written `bytes:\\x..` as OpenAI writes it."""
    from chatloop.engine.detok import TokenPieces

    pieces = TokenPieces(tokenizer)
    ids = tokenizer(MIXED, add_special_tokens=False)["input_ids"]
    got = [pieces(i) for i in ids]
    assert b"".join(bytes(p["bytes"]) for p in got) == MIXED.encode()
    partial = [p for p in got if p["token"].startswith("bytes:")]
    assert partial and all("\\x" in p["token"] for p in partial)
    space = pieces(tokenizer(" Paris", add_special_tokens=False)["input_ids"][0])
    assert space["token"].startswith(" ") and space["bytes"][0] == 0x20
    eos = pieces(tokenizer.eos_token_id)
    assert eos["token"] == tokenizer.eos_token and bytes(eos["bytes"]) == tokenizer.eos_token.encode()


def test_token_pieces_of_a_sentencepiece_tokenizer_are_its_text():
    """A SentencePiece vocabulary writes text, not bytes: "é" is a character there (byte-level BPE
    would read it as the byte 0xE9) and "▁" a space."""
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from chatloop.engine.detok import TokenPieces

    text = "café ción łódź naïve café ción"
    spm = SentencePieceBPETokenizer()
    spm.train_from_iterator([text] * 20, vocab_size=60, min_frequency=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=spm)
    pieces = TokenPieces(tok)
    assert not pieces.byte_level
    ids = tok(text, add_special_tokens=False)["input_ids"]
    joined = b"".join(bytes(pieces(i)["bytes"]) for i in ids)
    assert joined.decode().strip() == text and "bytes:" not in "".join(pieces(i)["token"] for i in ids)
