"""The tiktoken chunker: examples, hypothesis properties, offline encodings, a 10 MB document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("tiktoken", reason="the chunker needs tiktoken")
pytestmark = pytest.mark.extras

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from rag_pgstore import InvalidInputError, UnsupportedError
from rag_pgstore.chunking import TokenChunker, load_encoding

ENC = load_encoding("cl100k_base")


def tokens(text: str) -> int:
    return len(ENC.encode_ordinary(text))


def test_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph, short.\n\nSecond paragraph. It has two sentences.\n\nThird."
    chunks = TokenChunker(max_tokens=12, overlap=0).chunk(text, entity_id="doc")
    assert [c.text for c in chunks] == [
        "First paragraph, short.\n\n",
        "Second paragraph. It has two sentences.\n\nThird.",
    ][: len(chunks)] or all(c.text in text for c in chunks)
    assert all(c.token_count <= 12 for c in chunks)
    assert chunks[0].text.startswith("First paragraph")
    assert [(c.chunk_id, c.chunk_index, c.total_chunks) for c in chunks] == [
        (f"doc#{i}", i, len(chunks)) for i in range(len(chunks))
    ]


def test_special_token_strings_are_text() -> None:
    chunks = TokenChunker(max_tokens=50).chunk("before <|endoftext|> after", entity_id="d")
    assert chunks[0].text == "before <|endoftext|> after"
    assert chunks[0].token_count == tokens("before <|endoftext|> after") > 3


def test_blank_input_gives_no_chunks() -> None:
    chunker = TokenChunker()
    assert chunker.chunk("", entity_id="d") == []
    assert chunker.chunk(" \n\t \n", entity_id="d") == []


def test_deterministic_ids_and_hashes() -> None:
    text = "Alpha beta gamma. " * 100
    a = TokenChunker(max_tokens=40, overlap=8).chunk(text, entity_id="doc-1", metadata={"k": 1})
    b = TokenChunker(max_tokens=40, overlap=8).chunk(text, entity_id="doc-1", metadata={"k": 1})
    assert a == b
    assert len({c.content_hash for c in a}) >= 1 and a[0].metadata == {"k": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"overlap": -1}, "overlap"),
        ({"max_tokens": 10, "overlap": 10}, "overlap"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TokenChunker(**kwargs)


def test_model_names_and_unknown_encodings() -> None:
    assert load_encoding("gpt-4o").name == "o200k_base"
    assert TokenChunker(encoding="gpt-4").chunk("hello", entity_id="d")[0].token_count == 1
    with pytest.raises(UnsupportedError, match="encoding or model name"):
        load_encoding("no-such-model")


def test_offline_with_an_empty_cache_dir(tmp_path: object) -> None:
    code = (
        "from rag_pgstore.chunking import TokenChunker\n"
        "print(TokenChunker(encoding='o200k_base').chunk('hello world', entity_id='d')[0].token_count)"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


PIECES = [
    *"abc xyz.!?\n\t,",
    "é",
    "日本",
    "語",
    "🎉",
    "👩\u200d👩\u200d👧",
    "<|endoftext|>",
    "\n\n",
    "ÿ",
    " word",
    # Characters near the cut rules: slashes after newlines (o200k), CRLF, non-ASCII spaces,
    # digit runs, contractions, whitespace runs.
    "/",
    "\r\n",
    "\u00a0",
    "\u3000",
    "1234567",
    "'s",
    "  ",
    "\n/",
    "\n  ",
]
TEXT = hs.lists(hs.sampled_from(PIECES), max_size=300).map("".join)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(TEXT, hs.integers(4, 40), hs.integers(0, 39), hs.sampled_from(["cl100k_base", "o200k_base"]))
def test_properties(text: str, max_tokens: int, overlap: int, encoding: str) -> None:
    overlap = min(overlap, max_tokens - 1)
    chunker = TokenChunker(max_tokens=max_tokens, overlap=overlap, encoding=encoding)
    chunks = chunker.chunk(text, entity_id="e")
    enc = load_encoding(encoding)

    def tokens(text: str) -> int:
        return len(enc.encode_ordinary(text))

    if not text.strip():
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    previous_end = 0
    for c in chunks:
        assert c.text == text[c.start : c.end]  # offsets are exact
        assert "\ufffd" not in c.text or "\ufffd" in text  # no split characters
        assert c.token_count == tokens(c.text) <= max_tokens  # the count is exact; the budget
        assert c.start <= previous_end  # no gap: nothing dropped
        if c.start < previous_end:  # overlap only as requested
            assert tokens(text[c.start : previous_end]) <= overlap + 2
        assert c.end > previous_end  # progress: nothing duplicated beyond the overlap
        previous_end = c.end


def test_ten_megabyte_document_is_fast_enough() -> None:
    paragraph = (
        "PostgreSQL stores rows in tables. pgvector adds vector search to it! " * 12 + "\n\n"
    )
    text = (paragraph * (10_000_000 // len(paragraph) + 1))[:10_000_000]
    started = time.perf_counter()
    raw = len(ENC.encode_ordinary(text))
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    chunks = TokenChunker(max_tokens=512, overlap=0).chunk(text, entity_id="big")
    chunk_seconds = time.perf_counter() - started
    assert sum(c.token_count for c in chunks) >= raw * 0.99
    assert chunks[-1].end == len(text)
    # Not a timing assertion of quality (benchmarks do that): a guard against accidental
    # quadratic behaviour, which would be orders of magnitude slower.
    assert chunk_seconds < 20 * encode_seconds + 5


TEXT_FOR_FRAMEWORKS = (
    "First paragraph about PostgreSQL.\n\n" + "Second paragraph about pgvector and HNSW. " * 30
)


@pytest.mark.frameworks
def test_langchain_text_splitter_keeps_exact_offsets() -> None:
    from langchain_core.documents import Document

    from rag_pgstore.adapters.langchain import ChunkerTextSplitter

    splitter = ChunkerTextSplitter(TokenChunker(max_tokens=64, overlap=8), add_start_index=True)
    docs = splitter.split_documents(
        [Document(page_content=TEXT_FOR_FRAMEWORKS, metadata={"source": "a.md"})]
    )
    assert len(docs) > 2
    for doc in docs:
        start, end = doc.metadata["start_index"], doc.metadata["end_index"]
        assert TEXT_FOR_FRAMEWORKS[start:end] == doc.page_content
        assert doc.metadata["source"] == "a.md" and doc.metadata["token_count"] <= 64
    assert splitter.split_text(TEXT_FOR_FRAMEWORKS) == [d.page_content for d in docs]


@pytest.mark.frameworks
@pytest.mark.parametrize(
    "make",
    [
        lambda cls: cls(chunk_size=40, chunk_overlap=10, add_start_index=True),
        lambda cls: cls(chunk_size=40, chunk_overlap=10, encoding_name="o200k_base"),
        lambda cls: cls(chunk_size=40, chunk_overlap=10, model_name="gpt-4o"),
        lambda cls: cls.from_tiktoken_encoder(chunk_size=40, chunk_overlap=10),
        lambda cls: cls.from_tiktoken_encoder(
            encoding_name="cl100k_base", chunk_size=40, chunk_overlap=10, add_start_index=True
        ),
    ],
    ids=["keywords", "encoding_name", "model_name", "from_tiktoken", "from_tiktoken_named"],
)
def test_langchain_splitter_takes_the_keywords_every_splitter_takes(make: Any) -> None:
    from rag_pgstore.adapters.langchain import ChunkerTextSplitter

    splitter = make(ChunkerTextSplitter)
    assert (splitter.chunker.max_tokens, splitter.chunker.overlap_tokens) == (40, 10)
    text = TEXT_FOR_FRAMEWORKS + " Café crème, naïve façade — 東京 " * 20
    encoding = load_encoding(splitter.chunker.encoding)
    spans = list(splitter.chunker.spans(text))
    assert splitter.split_text(text) == [text[start:end] for start, end, _ in spans]
    assert len(spans) > 3 and spans[0][0] == 0 and spans[-1][1] == len(text)
    for (_, end), (start, _) in zip(
        [(a, b) for a, b, _ in spans], [(a, b) for a, b, _ in spans[1:]], strict=False
    ):
        assert start <= end  # no gap: every character is in some chunk
    for start, end, count in spans:  # within the budget, no broken characters
        assert count == len(encoding.encode_ordinary(text[start:end])) <= 40
        assert "\ufffd" not in text[start:end]
    for doc in splitter.create_documents([text]):
        if "start_index" in doc.metadata:
            assert text[doc.metadata["start_index"] : doc.metadata["end_index"]] == doc.page_content


@pytest.mark.frameworks
def test_langchain_splitter_refuses_what_it_cannot_honour() -> None:
    from rag_pgstore.adapters.langchain import ChunkerTextSplitter

    cases: list[tuple[dict[str, Any], str]] = [
        ({"strip_whitespace": True}, "exact slices"),
        ({"length_function": len}, "tokens"),
        ({"separators": ["\n"]}, "separators"),
        ({"chunker": TokenChunker(), "chunk_size": 10}, "got both"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UnsupportedError, match=message):
            ChunkerTextSplitter(**kwargs)
    with pytest.raises(UnsupportedError, match="allowed_special"):
        ChunkerTextSplitter.from_tiktoken_encoder(allowed_special="all")


@pytest.mark.frameworks
def test_llamaindex_node_parser_keeps_offsets_and_source() -> None:
    from llama_index.core import Document
    from llama_index.core.schema import TextNode

    from rag_pgstore.adapters.llamaindex import ChunkerNodeParser

    parser = ChunkerNodeParser(max_tokens=64, overlap=8)
    nodes = parser.get_nodes_from_documents([Document(text=TEXT_FOR_FRAMEWORKS, id_="doc")])
    assert len(nodes) > 2
    for node in nodes:
        assert isinstance(node, TextNode)
        assert node.ref_doc_id == "doc"
        assert TEXT_FOR_FRAMEWORKS[node.start_char_idx : node.end_char_idx] == node.get_content()
        assert tokens(node.get_content()) <= 64


def test_real_text_where_joining_adds_tokens_stays_in_budget() -> None:
    # The Python Language Reference has chunks whose units, counted apart, sum to fewer tokens
    # than the chunk itself: the budget must still hold.
    from benchmarks.retrieval import DATA

    corpus = "\n\n".join(
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()
    )
    for encoding in ("cl100k_base", "o200k_base"):
        enc = load_encoding(encoding)
        for max_tokens, overlap in ((512, 64), (100, 20)):
            chunker = TokenChunker(max_tokens=max_tokens, overlap=overlap, encoding=encoding)
            chunks = chunker.chunk(corpus, entity_id="ref")
            assert all(
                len(enc.encode_ordinary(c.text)) == c.token_count <= max_tokens for c in chunks
            )
            assert chunks[-1].end == len(corpus)
            # Most chunks fill at least half the budget (cuts prefer the second half).
            assert sum(c.token_count > max_tokens // 2 for c in chunks) >= 0.9 * len(chunks)


def test_overlap_gives_way_when_the_next_character_would_not_fit() -> None:
    # Found by a random search: the overlap plus the next (7-token) emoji exceeded the budget.
    text = "\n\n👩\u200d👩\u200d👧?"
    for c in TokenChunker(max_tokens=7, overlap=5).chunk(text, entity_id="d"):
        assert tokens(c.text) == c.token_count <= 7


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="lone surrogate at index 3"):
        TokenChunker().chunk("abc\ud800def", entity_id="d")


def test_cuts_prefer_paragraphs_then_sentences() -> None:
    text = ("One sentence here. " * 8 + "\n\n") * 6
    chunks = TokenChunker(max_tokens=100, overlap=0).chunk(text, entity_id="d")
    assert all(c.text.endswith("\n\n") for c in chunks[:-1])
    text = "One sentence here. " * 200
    chunks = TokenChunker(max_tokens=100, overlap=0).chunk(text, entity_id="d")
    assert all(c.text.endswith(".") for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == text
