"""The bundled model, in one process and in a pool of worker processes."""

from __future__ import annotations

import math

import pytest

from rag_pgstore import InvalidInputError
from rag_pgstore.pipeline.embedders import local_embedder, local_model_installed

pytestmark = pytest.mark.extras

TEXTS = [
    "A connection pool hands out open connections.",
    "Bread needs flour, water and salt.",
    "HNSW builds a graph of neighbours, layer by layer. " * 20,
    "",
    "Short.",
]


@pytest.mark.skipif(not local_model_installed(), reason="needs rag-pgstore[local]")
def test_two_processes_embed_what_one_does() -> None:
    one = local_embedder(batch_size=2).embed(TEXTS)
    two = local_embedder(batch_size=2, processes=2).embed(TEXTS)
    assert len(one) == len(two) == len(TEXTS)
    for a, b in zip(one, two, strict=True):
        assert len(a) == len(b) == 384
        assert math.isclose(sum(x * y for x, y in zip(a, b, strict=True)), 1.0, abs_tol=1e-4)


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"processes": 0}, {"processes": 1.5}])
def test_bad_options_are_refused_before_the_model_loads(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match="expected"):
        local_embedder(**options)  # type: ignore[arg-type]
