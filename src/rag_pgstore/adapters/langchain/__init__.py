"""LangChain integration: a ``VectorStore``, a retriever with hybrid search, test embeddings.

Importing this package imports ``langchain_core`` (``pip install 'rag-pgstore[langchain]'``);
``import rag_pgstore`` alone does not.
"""

from rag_pgstore.errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
    import langchain_text_splitters  # noqa: F401
except ImportError as exc:
    raise MissingDependencyError(
        f"expected LangChain for this adapter ({exc.name} is missing); "
        "pip install 'rag-pgstore[langchain]'"
    ) from exc

from rag_pgstore.adapters.langchain.embeddings import HashEmbeddings, LocalEmbeddings
from rag_pgstore.adapters.langchain.retriever import PgStoreRetriever
from rag_pgstore.adapters.langchain.splitter import ChunkerTextSplitter
from rag_pgstore.adapters.langchain.vectorstore import LangChainVectorStore

__all__ = [
    "ChunkerTextSplitter",
    "HashEmbeddings",
    "LangChainVectorStore",
    "LocalEmbeddings",
    "PgStoreRetriever",
]
