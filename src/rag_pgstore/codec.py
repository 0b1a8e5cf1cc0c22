"""Check what callers pass before anything is sent, and encode it for the wire.

Everything here is pure: a batch is either fully valid and encoded, or an error names the first
offending chunk and nothing has touched the database. It holds the one pgvector binary encoder
(COPY rows and query parameters alike) and the one ``content_hash`` (the write path, the chunker
and the pipeline).

Query vectors are bound in pgvector's binary format with no per-connection type lookup:
pgvector's own psycopg adapters need ``register_vector`` on every connection (a round trip to
find the type's oid, and loaders that would change what every other query on that pooled
connection returns). A parameter sent in binary with oid 0 lets the server infer its type from
the statement (``embedding <=> $1``) and read it with ``vector_recv``/``halfvec_recv``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from rag_pgstore.errors import CollectionNameError, DimensionError, InvalidInputError, show
from rag_pgstore.types import Chunk

__all__ = [
    "MAX_METADATA_DEPTH",
    "MAX_NAME_LENGTH",
    "Batch",
    "WireVector",
    "check_batch",
    "check_ids",
    "check_name",
    "content_hash",
    "encode_query",
    "jsonb",
    "metadata_json",
    "wire_vector",
]

# PostgreSQL truncates identifiers at 63 bytes; index names add a suffix of up to 15 characters.
MAX_NAME_LENGTH = 48
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# An escaped NUL in json.dumps output: "\u0000" preceded by an even number of backslashes
# (an odd total means the backslash itself was escaped, i.e. the text really said "\u0000").
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_INT4_MAX = 2**31 - 1
# How deeply metadata may nest. JSON readers (Python's json, psycopg) recurse on nesting, so
# something far deeper than any real metadata could be stored but not read back.
MAX_METADATA_DEPTH = 100


def content_hash(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8), hex: what ``content_hash`` holds and what unchanged means."""
    return hashlib.sha256(text.encode()).hexdigest()


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        hint = ""
        if isinstance(name, str):
            hint = f"; try {re.sub(r'[^a-z0-9_]', '_', name.lower())[:MAX_NAME_LENGTH]!r}"
        raise CollectionNameError(
            f"expected {what} to be lower-case letters, digits and underscores, starting with a "
            f"letter or underscore, at most {MAX_NAME_LENGTH} characters, got {show(name)}{hint}"
        )
    return name


def metadata_json(metadata: object, where: str) -> str:
    """Serialise metadata to JSON text that PostgreSQL's ``jsonb`` will accept unchanged."""
    if not isinstance(metadata, dict):
        try:
            metadata = dict(metadata)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"expected metadata to be a mapping, got {type(metadata).__name__} ({where})"
            ) from None
    try:
        text = _JSON.encode(metadata)
    except RecursionError:
        text = ""  # far deeper than the limit: reported just below
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"expected JSON-serialisable metadata, {exc} ({where})") from None
    # Only text with many brackets can be deep; the exact walk runs just for that text.
    if not text or (
        text.count("{") + text.count("[") > MAX_METADATA_DEPTH
        and _depth(metadata) > MAX_METADATA_DEPTH
    ):
        raise InvalidInputError(
            f"expected metadata nested at most {MAX_METADATA_DEPTH} deep ({where}); "
            "flatten it or store it as a JSON string"
        )
    # The substring test is a fast C scan; the regex (slow on long text) only confirms a hit.
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise InvalidInputError(
            f"expected metadata without NUL characters (jsonb cannot store \\u0000) ({where})"
        )
    return text


def _depth(value: object) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursion: any depth is safe)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_text(value: object, field: str, where: str, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"expected {field} to be str, got {type(value).__name__} ({where})")
    if not empty_ok and not value:
        raise InvalidInputError(f"expected a non-empty {field} ({where})")
    if "\x00" in value:
        raise InvalidInputError(
            f"expected {field} without NUL characters (PostgreSQL text cannot hold them) ({where})"
        )
    return value


def _check_int(value: object, field: str, minimum: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(
            f"expected {field} to be an int >= {minimum}, got {show(value)} ({where})"
        )
    if value > _INT4_MAX:
        raise InvalidInputError(f"expected {field} to fit in 32 bits, got {value} ({where})")
    return value


def _to_wire(
    vectors: Sequence[Sequence[float]],
    dim: int,
    vector_type: str,
    chunks: Sequence[Chunk],
    nonzero: bool,
) -> Any:
    """Convert embeddings to pgvector's big-endian element type in one numpy call.

    Every check that fails names the first offending chunk; the per-chunk work happens only on
    that error path, so a valid batch costs one conversion and one ``isfinite``.
    """
    try:
        with np.errstate(over="ignore"):  # overflow becomes inf, reported below
            wire = np.asarray(vectors, dtype=">f4")
    except (TypeError, ValueError, OverflowError) as exc:
        _check_lengths(vectors, dim, chunks)  # ragged input: name the odd one out
        raise InvalidInputError(f"expected embeddings of numbers: {exc}") from None
    if wire.shape != (len(vectors), dim):
        _check_lengths(vectors, dim, chunks)
        raise InvalidInputError(f"expected flat embeddings of {dim} numbers, got {wire.shape}")
    if vector_type == "halfvec":
        with np.errstate(over="ignore"):
            wire = wire.astype(">f2")
    finite = np.isfinite(wire).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        source = np.asarray(vectors[bad], dtype=np.float64)
        if not np.isfinite(source).all():
            raise InvalidInputError(
                f"expected finite numbers in the embedding, got NaN or inf ({_label(chunks[bad])})"
            )
        limit = "65504" if vector_type == "halfvec" else "3.4e38"
        raise InvalidInputError(
            f"expected embedding values within +-{limit} for {vector_type}, got "
            f"{float(np.abs(source).max())} ({_label(chunks[bad])})"
        )
    if nonzero:
        zero = ~wire.any(axis=1)
        if zero.any():
            raise InvalidInputError(_ZERO.format(where=_label(chunks[int(np.argmax(zero))])))
    return wire


# A zero vector has no direction: its cosine distance to anything is NaN, which would poison
# every score it takes part in (a hybrid search's min-max rescaling included).
_ZERO = (
    "expected a non-zero embedding under cosine distance (a zero vector has no direction: its "
    "cosine distance is NaN), got all zeros ({where}); embed the text again, or use l2 or "
    "inner_product distance"
)


def _check_lengths(vectors: Sequence[Sequence[float]], dim: int, chunks: Sequence[Chunk]) -> None:
    for chunk, vector in zip(chunks, vectors, strict=True):
        try:
            size = len(vector)
        except TypeError:
            raise InvalidInputError(
                f"expected the embedding to be a sequence of floats, got "
                f"{type(vector).__name__} ({_label(chunk)})"
            ) from None
        if size != dim:
            raise DimensionError(f"expected {dim} dimensions, got {size} ({_label(chunk)})")


@dataclass(frozen=True, slots=True)
class Batch:
    """Chunks that passed every check except their metadata's, ready to be encoded for COPY.

    ``order`` pairs each distinct ``chunk_id`` with the position of its last occurrence (the
    last duplicate wins) and is sorted by id, so that concurrent writers take row locks in one
    order. Metadata is serialised only by :meth:`rows`, while the COPY streams: that work then
    overlaps the server's, which is most of what makes a write as fast as a bare COPY.
    """

    chunks: Sequence[Chunk]
    order: list[tuple[str, int]]
    vectors: bytes  # every chunk's vector in pgvector's binary form, back to back
    stride: int

    @property
    def ids(self) -> list[str]:
        return [chunk_id for chunk_id, _ in self.order]

    def rows(self, encoders: Sequence[Encoder]) -> Iterator[list[Any]]:
        """Encode each chunk as a COPY row: one value per encoder, in order (``schema.WRITTEN``).

        Raises :class:`InvalidInputError` for metadata that is not JSON or holds a NUL; raised
        inside a COPY, that aborts it, and the transaction writes nothing.
        """
        stride, vectors = self.stride, self.vectors
        for chunk_id, i in self.order:
            vector = vectors[i * stride : (i + 1) * stride]
            yield [encode(self.chunks[i], chunk_id, vector) for encode in encoders]


# What a written column's value is, from the chunk, its id and its vector in binary form.
Encoder = Callable[[Chunk, str, bytes], Any]


def jsonb(value: object, chunk_id: str) -> bytes:
    """``value`` as a binary COPY ``jsonb`` field (version byte 1, then the JSON text)."""
    try:
        return b"\x01" + metadata_json(value, "").encode()
    except InvalidInputError:  # the label costs more than the encoding: build it only now
        metadata_json(value, f"chunk {show(chunk_id)}")
        raise


# PostgreSQL refuses a tsvector over 1 MiB; a longer content would fail in the keyword index
# halfway through a batch (and text this long is no chunk a model can embed anyway).
MAX_CONTENT_BYTES = (1 << 20) - 1


def check_batch(
    chunks: Sequence[Chunk], *, dim: int, vector_type: str, nonzero: bool = False
) -> Batch:
    """Check ``chunks`` (all but the JSON encoding of their metadata) and convert their vectors.

    ``nonzero`` refuses all-zero embeddings (cosine collections). Fails on the first bad
    chunk, naming it, before anything reaches the database.
    """
    for position, chunk in enumerate(chunks):
        _check_chunk(chunk, position)
    if not chunks:
        return Batch(chunks, [], b"", 0)
    latest = {chunk.chunk_id: i for i, chunk in enumerate(chunks)}
    matrix = _to_wire([c.embedding for c in chunks], dim, vector_type, chunks, nonzero)
    framed = _pgvector_binary(matrix)
    return Batch(chunks, sorted(latest.items()), framed.tobytes(), framed.shape[1])


def compact_vectors(vectors: Sequence[Sequence[float]]) -> Sequence[Sequence[float]]:
    """A model's batch of vectors as the rows of one float64 array, when they convert cleanly.

    A list of 384 Python floats takes 12 kB, its row 3 kB, and a batch of rows becomes the
    wire format in a fraction of the time. Vectors that do not convert (ragged, not numbers)
    are returned as they are, for :func:`check_batch` to name the chunk at fault.
    """
    try:
        matrix = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return vectors
    return list(matrix) if matrix.ndim == 2 else vectors


def binary_vectors(vectors: Sequence[Sequence[float]]) -> list[bytes]:
    """Each vector (all of one size) in pgvector's binary ``vector`` form, for COPY."""
    framed = _pgvector_binary(np.asarray(vectors, dtype=">f4"))
    return [row.tobytes() for row in framed]


def _pgvector_binary(matrix: Any) -> Any:
    """Rows of big-endian elements in pgvector's binary form: dim, an unused int16, elements."""
    rows, dim = matrix.shape
    header = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    return np.hstack([np.tile(header, (rows, 1)), matrix.view(np.uint8)])


def _check_chunk(chunk: object, position: int) -> None:
    """Raise naming what is wrong with ``chunk``, the ``position``-th of its batch."""
    if not isinstance(chunk, Chunk):
        hint = ""
        if type(chunk).__name__ == "TextChunk":  # the chunker's output has no vector yet
            hint = (
                ": embed it first, chunk.to_chunk(vector), or let "
                "Pipeline(store, embedder).ingest([Document(id, text)]) chunk, embed and store"
            )
        raise InvalidInputError(
            f"expected rag_pgstore.Chunk, got {type(chunk).__name__} (item {position}){hint}"
        )
    label = _label(chunk)
    _check_text(chunk.chunk_id, "chunk_id", label, empty_ok=False)
    if chunk.entity_id is not None:
        _check_text(chunk.entity_id, "entity_id", label)
    _check_int(chunk.chunk_index, "chunk_index", 0, label)
    _check_int(chunk.total_chunks, "total_chunks", 1, label)
    _check_text(chunk.content, "content", label)
    if (
        len(chunk.content) * 4 > MAX_CONTENT_BYTES
        and (size := len(chunk.content.encode("utf-8", "surrogatepass"))) > MAX_CONTENT_BYTES
    ):
        raise InvalidInputError(
            f"expected content of at most {MAX_CONTENT_BYTES:,} bytes (PostgreSQL's tsvector "
            f"limit, which keyword search meets first), got {size:,} ({label}); split it into "
            "smaller chunks"
        )
    for field, value in (("metadata", chunk.metadata), ("adapter_data", chunk.adapter_data)):
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInputError(
                f"expected {field} to be a mapping, got {type(value).__name__} ({label})"
            )


def _label(chunk: Chunk) -> str:
    return f"chunk {chunk.chunk_id!r}"


def encode_query(
    vector: Sequence[float], dim: int, *, vector_type: str = "vector", nonzero: bool = False
) -> npt.NDArray[np.float64]:
    """Validate a query embedding and return it as a float64 array (one numpy conversion).

    Checked as the column will compare it: in ``vector_type``'s precision, so a value past
    halfvec's range, or one that rounds to zero there, is caught. ``nonzero`` refuses an
    all-zero query (cosine collections).
    """
    try:
        size = len(vector)
    except TypeError:
        raise InvalidInputError(
            f"expected the query embedding to be a sequence of floats, got {type(vector).__name__}"
        ) from None
    if size != dim:
        raise DimensionError(f"expected {dim} dimensions, got {size} (query embedding)")
    try:
        values = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"expected the query embedding to be numbers: {exc}") from None
    if values.shape != (dim,):
        raise InvalidInputError(f"expected a flat query embedding, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise InvalidInputError("expected finite numbers in the query embedding, got NaN or inf")
    with np.errstate(over="ignore", under="ignore"):
        stored = values.astype(np.float16 if vector_type == "halfvec" else np.float32)
    if not np.isfinite(stored).all():
        limit = "65504" if vector_type == "halfvec" else "3.4e38"
        raise InvalidInputError(
            f"expected query embedding values within +-{limit} for {vector_type}, got "
            f"{float(np.abs(values).max())}"
        )
    if nonzero and not stored.any():
        raise InvalidInputError(_ZERO.format(where="query embedding"))
    return values


MAX_TENANT_LENGTH = 256


def check_tenant(tenant: object) -> str:
    """Return ``tenant`` if it is a usable tenant id: a non-blank string of at most
    ``MAX_TENANT_LENGTH`` characters, without NUL (PostgreSQL text cannot hold one)."""
    if (
        not isinstance(tenant, str)
        or not tenant.strip()
        or len(tenant) > MAX_TENANT_LENGTH
        or "\x00" in tenant
    ):
        raise InvalidInputError(
            f"expected a tenant id: a non-blank string of at most {MAX_TENANT_LENGTH} "
            f"characters without NUL, got {show(tenant)}"
        )
    return tenant


def check_ids(ids: Iterable[str], what: str) -> list[str]:
    """Return ``ids`` as a list without repeats, or raise if it is not a list of strings."""
    if isinstance(ids, str) or not isinstance(ids, Iterable):
        raise InvalidInputError(f"expected a list of {what}, got {type(ids).__name__} {show(ids)}")
    values = list(dict.fromkeys(ids))
    for value in values:
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInputError(f"expected {what} to be strings without NUL, got {show(value)}")
    return values


@dataclass(frozen=True, slots=True)
class WireVector:
    """A vector already in PostgreSQL's binary wire format."""

    data: bytes


class _WireVectorDumper(Dumper):
    format = Format.BINARY
    oid = 0  # unknown: the server infers vector or halfvec from the statement

    def dump(self, obj: WireVector) -> bytes:
        return obj.data


# Global, but only for our own class: nothing else anyone binds changes.
psycopg.adapters.register_dumper(WireVector, _WireVectorDumper)


def wire_vector(values: Sequence[float] | npt.NDArray[np.float64], vector_type: str) -> WireVector:
    """``values`` (already validated) as one ``vector``/``halfvec`` query parameter."""
    element = ">f2" if vector_type == "halfvec" else ">f4"
    matrix = np.asarray(values, dtype=element).reshape(1, -1)
    return WireVector(_pgvector_binary(matrix).tobytes())
