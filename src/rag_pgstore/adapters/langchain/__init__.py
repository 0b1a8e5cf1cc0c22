"""LangChain integration: a ``VectorStore``, a retriever with hybrid search, test embeddings.

Importing this package imports ``langchain_core`` (``pip install 'rag-pgstore[langchain]'``);
``import rag_pgstore`` alone does not.
"""

from rag_pgstore.adapters.langchain.embeddings import HashEmbeddings
from rag_pgstore.adapters.langchain.retriever import PgStoreRetriever
from rag_pgstore.adapters.langchain.splitter import ChunkerTextSplitter
from rag_pgstore.adapters.langchain.vectorstore import LangChainVectorStore

__all__ = ["ChunkerTextSplitter", "HashEmbeddings", "LangChainVectorStore", "PgStoreRetriever"]
