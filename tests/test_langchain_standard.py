"""LangChain's own conformance suite for vector stores, sync and async, against the real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("langchain_tests", reason="LangChain's conformance suite: langchain-tests")
pytestmark = pytest.mark.frameworks

from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from rag_pgstore.adapters.langchain import LangChainVectorStore
from tests.conftest import StoreFactory


class TestLangChainVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, make_store: StoreFactory) -> Iterator[VectorStore]:
        store = make_store(dim=6)  # the suite's DeterministicFakeEmbedding size
        yield LangChainVectorStore(store, embedding=self.get_embeddings())
        store.drop()
