"""LlamaIndex integration: a ``BasePydanticVectorStore`` over a rag_pgstore collection.

Importing this package imports ``llama_index.core`` (``pip install 'rag-pgstore[llamaindex]'``);
``import rag_pgstore`` alone does not.
"""

from rag_pgstore.errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:
    raise MissingDependencyError(
        f"expected LlamaIndex for this adapter ({exc.name} is missing); "
        "pip install 'rag-pgstore[llamaindex]'"
    ) from exc

from rag_pgstore.adapters.llamaindex.embeddings import HashEmbedding, LocalEmbedding
from rag_pgstore.adapters.llamaindex.parser import ChunkerNodeParser
from rag_pgstore.adapters.llamaindex.vectorstore import LlamaIndexVectorStore

__all__ = ["ChunkerNodeParser", "HashEmbedding", "LlamaIndexVectorStore", "LocalEmbedding"]
