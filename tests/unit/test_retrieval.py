"""Document retrieval: text extraction and its refusals, chunking (English and Chinese), search
ranking with the real all-MiniLM-L6-v2 embedder on SQLite and PostgreSQL, user and conversation
isolation, and the search_documents tool through a Toolbox."""

import re
from itertools import pairwise

import numpy as np
import pytest
from conftest import run_async

from chatloop.errors import NotFoundError, TooLargeError, UnsupportedMediaError, UsageError
from chatloop.store import documents
from chatloop.store.models import Conversation, User
from chatloop.tools import retrieval
from chatloop.tools.base import CallContext, Toolbox
from chatloop.tools.retrieval import Retrieval, chunk_text, extract_text, ingest_sync, search_sync

BREAD = """Baking a sourdough loaf

Feed the starter the night before so it is bubbly and active. Mix flour, water and salt, then fold
the dough every half hour for two hours. Shape it, let it rise in the fridge overnight, and bake it
in a preheated Dutch oven at 250 degrees Celsius for twenty minutes with the lid on, then twenty more
without it until the crust is deep brown."""

TIDES = """Why the sea rises and falls

Tides are long waves moved by the gravitational pull of the Moon and, to a lesser degree, the Sun.
Most coasts see two high waters and two low waters every lunar day. Spring tides, with the largest
range, come at new and full moon, when Sun and Moon pull in line."""

VPN = """Working from home

To reach the intranet from outside the building, install the WireGuard client, import the profile
that IT mailed you, and switch the tunnel on before opening internal sites. Without the tunnel,
internal addresses do not resolve."""


@pytest.fixture(scope="module")
def embedder():
    """The process's embedder, loaded once for the module (a few seconds)."""
    retrieval.EMBEDDER.embed(["warm up"])
    return retrieval.EMBEDDER


def add_user(db, email: str) -> str:
    with db.session() as s:
        user = User(email=email, password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def add_conversation(db, user_id: str) -> str:
    with db.session() as s:
        conv = Conversation(user_id=user_id)
        s.add(conv)
        s.flush()
        return conv.id


def upload(db, user_id, text: str, name: str, conversation_id=None):
    doc, _, _ = ingest_sync(db, user_id, text.encode(), name, "text/plain", conversation_id)
    return doc.id


# --- extraction ---------------------------------------------------------------------------------------

def test_types_come_from_the_extension_first_and_unknown_ones_are_refused():
    assert extract_text(b"# Title\n\nbody", "notes.md", "application/octet-stream") == ("text/markdown",
                                                                                         "# Title\n\nbody")
    assert extract_text(b"a,b\n1,2\r\n", "t.csv", "")[0] == "text/csv"
    assert extract_text(b'{"k": 1}', "data", "application/json") == ("application/json", '{"k": 1}')
    with pytest.raises(UnsupportedMediaError, match="cannot be searched"):
        extract_text(b"MZ\x90", "setup.exe", "application/octet-stream")


def test_html_keeps_visible_text_in_blocks_and_drops_scripts():
    html = (b"<html><head><title>Menu</title><style>p{color:red}</style></head><body><h1>Soup &amp; bread"
            b"</h1><p>Tomato\n   soup<br>with basil</p><script>alert('no')</script>"
            b"<ul><li>rye</li></ul></body>")
    kind, text = extract_text(html, "menu.html", "text/html")
    assert kind == "text/html"
    assert text.splitlines()[0] == "Menu"
    assert "Soup & bread\n\nTomato soup\nwith basil" in text
    assert "alert" not in text and "color" not in text and text.endswith("rye")


def test_binary_undecodable_and_empty_documents_are_refused_with_a_reason():
    with pytest.raises(UsageError, match="binary"):
        extract_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.txt", "text/plain")
    with pytest.raises(UsageError, match="not UTF-8"):
        extract_text("café".encode("latin-1"), "menu.txt", "text/plain")
    with pytest.raises(UsageError, match="looks binary"):
        extract_text(bytes(range(1, 32)) * 10, "junk.txt", "text/plain")
    with pytest.raises(UsageError, match="no text"):
        extract_text(b" \n\t\n", "blank.md", "text/markdown")
    with pytest.raises(UsageError, match="no text"):
        extract_text(b"<script>x()</script>", "empty.html", "text/html")
    assert extract_text("Grüße".encode("utf-16"), "de.txt", "text/plain")[1] == "Grüße"


def test_pdf_text_is_extracted_when_pypdf_is_installed():
    pytest.importorskip("pypdf")
    pdf = minimal_pdf("Invoice total: 42 euros")
    kind, text = extract_text(pdf, "invoice.pdf", "application/pdf")
    assert (kind, text) == ("application/pdf", "Invoice total: 42 euros")
    with pytest.raises(UsageError, match="not a readable PDF"):
        extract_text(b"%PDF-1.4 garbage", "broken.pdf", "application/pdf")


def minimal_pdf(line: str) -> bytes:
    """A one-page PDF showing `line` in Helvetica, written by hand (with a correct xref table)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>"),
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- chunking -----------------------------------------------------------------------------------------

def english(paragraphs: int = 8) -> str:
    import random

    rng = random.Random(1)
    words = ["river", "stone", "market", "lantern", "orchard", "copper", "violin", "harbor", "meadow"]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(4, 22))).capitalize() + "."

    return "\n\n".join(" ".join(sentence() for _ in range(rng.randint(2, 7))) for _ in range(paragraphs))


def check_chunks(text: str, chunks, size: int) -> None:
    assert chunks and chunks[0].start == 0 and chunks[-1].end == len(text)
    for c in chunks:
        assert c.text == text[c.start:c.end] and c.text == c.text.strip()
        assert len(c.text) <= size
    for a, b in pairwise(chunks):
        assert a.start < b.start and not text[a.end:b.start].strip()  # in order, nothing skipped
        assert b.index == a.index + 1


def test_english_chunks_end_on_sentences_fit_the_size_and_overlap():
    text = english()
    chunks = chunk_text(text, size=500, overlap=120)
    assert len(chunks) >= 4
    check_chunks(text, chunks, 500)
    for c in chunks:
        assert c.text.endswith(".")
    overlapping = [b for a, b in pairwise(chunks) if b.start < a.end]
    assert len(overlapping) >= len(chunks) - 2  # a paragraph break may start one afresh
    for a, b in pairwise(chunks):
        assert a.end - b.start <= 120
        if b.start < a.end:  # an overlap starts a sentence or, from inside a long one, a word
            assert text[b.start - 1] in " \n"


def test_chunks_prefer_paragraph_boundaries():
    para = "One short sentence about a topic. " * 10  # 339 characters: two do not fit in 500
    text = "\n\n".join([para.strip(), para.strip().replace("topic", "theme"), para.strip()])
    chunks = chunk_text(text, size=500, overlap=0)
    assert [c.text for c in chunks] == text.split("\n\n")


def test_chinese_chunks_split_on_full_stops_without_spaces():
    text = "".join(f"第{i}段：今天的天气很好，我们去公园散步，然后在湖边喝茶。" if i % 3
                   else f"你知道第{i}条规则吗？" for i in range(60))
    assert " " not in text
    chunks = chunk_text(text, size=200, overlap=60)
    assert len(chunks) >= 6
    check_chunks(text, chunks, 200)
    for c in chunks:
        assert c.text[-1] in "。？"
    for a, b in pairwise(chunks):
        assert 0 < a.end - b.start <= 60 and text[b.start - 1] in "。？"


def test_a_sentence_longer_than_a_chunk_is_cut_at_words_or_commas():
    words = " ".join(f"word{i}" for i in range(300))  # ~2300 characters, no sentence end
    chunks = chunk_text(words, size=400, overlap=80)
    check_chunks(words, chunks, 400)
    assert all(re.fullmatch(r"word\d+( word\d+)*", c.text) for c in chunks)
    assert all(0 < a.end - b.start <= 80 for a, b in pairwise(chunks))  # room was left for the overlap
    cjk = "，".join("长句子没有句号" for _ in range(80))
    chunks = chunk_text(cjk, size=150, overlap=30)
    check_chunks(cjk, chunks, 150)
    assert all(c.text.endswith("，") or c.end == len(cjk) for c in chunks)


# --- embedding and search -----------------------------------------------------------------------------

def test_embeddings_are_unit_length_float32(embedder):
    vectors = embedder.embed(["a cat on a mat", "一只猫"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(retrieval.from_blobs([retrieval.to_blob(v) for v in vectors]), vectors)


def test_search_ranks_the_relevant_document_first(database, embedder):
    user = add_user(database, "a@example.com")
    for text, name in ((BREAD, "bread.txt"), (TIDES, "tides.md"), (VPN, "vpn.txt")):
        upload(database, user, text, name)
    # The questions share almost no words with the documents that answer them.
    for query, expected in (("How hot should the oven be for my bread?", "bread.txt"),
                            ("What makes the ocean go in and out twice a day?", "tides.md"),
                            ("How do I get onto the company network from my house?", "vpn.txt")):
        hits = search_sync(database, user, query, top_k=3)
        assert hits[0].filename == expected, (query, hits)
        assert hits[0].score > hits[1].score + 0.1
        assert sorted({h.filename for h in hits}) == ["bread.txt", "tides.md", "vpn.txt"]


def test_search_finds_the_passage_inside_a_long_document(database, embedder):
    user = add_user(database, "a@example.com")
    filler = english(6)
    doc = upload(database, user, f"{filler}\n\n{TIDES}\n\n{filler}", "notes.txt")
    hits = search_sync(database, user, "what causes spring tides?", top_k=2)
    assert hits[0].document_id == doc and "Spring tides" in hits[0].text and hits[0].chunk_index > 0


def test_users_and_conversations_see_only_their_own_documents(database, embedder):
    alice, bob = add_user(database, "alice@example.com"), add_user(database, "bob@example.com")
    chat1, chat2 = add_conversation(database, alice), add_conversation(database, alice)
    library = upload(database, alice, BREAD, "bread.txt")
    in_chat1 = upload(database, alice, TIDES, "tides.txt", chat1)
    upload(database, alice, VPN, "vpn.txt", chat2)
    assert search_sync(database, bob, "sourdough oven") == []
    assert search_sync(database, bob, "sourdough oven", conversation_id=chat1) == []
    seen = {h.document_id for h in search_sync(database, alice, "anything", conversation_id=chat1, top_k=8)}
    assert seen == {library, in_chat1}
    assert {h.document_id for h in search_sync(database, alice, "anything", top_k=8)} == {library}
    with database.session() as s:
        with pytest.raises(NotFoundError):
            documents.delete_document(s, bob, library)
        with pytest.raises(NotFoundError):  # nor can Bob upload into Alice's conversation
            documents.check_conversation(s, bob, chat1)
        assert [d.id for d, _ in documents.list_documents(s, alice, chat1)] == [in_chat1]
        assert len(documents.list_documents(s, alice)) == 3 and documents.list_documents(s, bob) == []
        documents.delete_document(s, alice, in_chat1)
    left = search_sync(database, alice, "anything", conversation_id=chat1)
    assert {h.document_id for h in left} == {library}
    with database.session() as s:  # deleting a conversation deletes its documents and their chunks
        s.delete(s.get(Conversation, chat2))
    with database.session() as s:
        assert [d.filename for d, _ in documents.list_documents(s, alice)] == ["bread.txt"]
        assert len(documents.candidates(s, alice, chat2)) == documents.chunk_count(s, library)


def test_ingest_limits_and_the_same_upload_twice(database, embedder, monkeypatch):
    user = add_user(database, "a@example.com")
    first, n, new = ingest_sync(database, user, BREAD.encode(), "../../etc/bread\x07.txt", "text/plain")
    assert new and n == 1 and first.filename == "bread.txt" and first.size_bytes == len(BREAD)
    again, n2, new2 = ingest_sync(database, user, BREAD.encode(), "copy.txt", "text/plain")
    assert (again.id, n2, new2) == (first.id, 1, False)
    monkeypatch.setattr(retrieval, "MAX_DOCUMENT_BYTES", 100)
    with pytest.raises(TooLargeError, match="at most 100 bytes"):
        ingest_sync(database, user, b"x" * 101, "big.txt", "text/plain")
    with pytest.raises(NotFoundError):
        ingest_sync(database, user, b"text", "a.txt", "text/plain", conversation_id="nope")


# --- the tool -----------------------------------------------------------------------------------------

def test_the_tool_answers_numbered_snippets_to_cite(database, embedder):
    alice, bob = add_user(database, "alice@example.com"), add_user(database, "bob@example.com")
    chat = add_conversation(database, alice)
    upload(database, alice, BREAD, "bread.txt")
    tides = upload(database, alice, TIDES, "tides.md", chat)

    async def calls():
        box = Toolbox([Retrieval(database)])
        await box.start()
        try:
            spec = box.spec("search_documents")
            found = await box.call("search_documents",
                                   {"query": "why is there a high tide twice daily", "top_k": 1},
                                   CallContext(user_id=alice, conversation_id=chat))
            nothing = await box.call("search_documents", {"query": "tides"}, CallContext(user_id=bob))
            bad = await box.call("search_documents", {"query": "x", "top_k": 9}, CallContext(user_id=alice))
            anonymous = await box.call("search_documents", {"query": "tides"}, CallContext())
            return spec, found, nothing, bad, anonymous
        finally:
            await box.close()

    spec, found, nothing, bad, anonymous = run_async(calls())
    assert spec.read_only and spec.name == "search_documents" and "uploaded" in spec.description
    assert not found.is_error
    assert found.content.startswith('[1] tides.md (chunk 1): "Why the sea rises and falls Tides are long')
    assert found.content.splitlines()[-1].startswith("Cite the passages you use as [n]")
    [item] = found.data
    assert item["n"] == 1 and item["document_id"] == tides and item["chunk_index"] == 0
    assert item["filename"] == "tides.md" and item["text"] == TIDES and 0.3 < item["score"] <= 1
    assert not nothing.is_error and "no uploaded documents" in nothing.content and nothing.data == []
    assert bad.is_error and "top_k" in bad.content
    assert anonymous.is_error and "no user" in anonymous.content
