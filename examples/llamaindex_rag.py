"""A LlamaIndex query engine over rag-pgstore, on the embedded PostgreSQL (or $DATABASE_URL).

    python examples/llamaindex_rag.py

Hybrid retrieval feeds a query engine. The LLM here is LlamaIndex's MockLLM, which answers
with the prompt it was given, so you can see the retrieved context (with real-size chunks and
a larger ``similarity_top_k`` use ``MockLLM(max_tokens=64)``: an echoed prompt refined over
many chunks overflows its context window); pass any real LLM
(`llm=OpenAI()`, `llm=Ollama(...)`) to get answers. The embeddings are the deterministic
hashing ones so the example runs anywhere; use any LlamaIndex embedding model.
"""

from __future__ import annotations

import os

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM

from rag_pgstore.adapters.llamaindex import HashEmbedding, LlamaIndexVectorStore

NOTES = {
    "postgres.md": "PostgreSQL keeps data in tables and runs every change in a transaction.",
    "pgvector.md": "pgvector stores embeddings in a vector column and finds nearest neighbours.",
    "hnsw.md": "An HNSW index makes nearest-neighbour search fast at a small cost in recall.",
    "baking.md": "Bread rises because yeast turns sugar into carbon dioxide.",
}


def main() -> None:
    embed_model = HashEmbedding(dim=256)
    vector_store = LlamaIndexVectorStore.from_url(
        os.environ.get("DATABASE_URL"), collection="llamaindex_rag_example", dim=256
    )
    vector_store.clear()
    index = VectorStoreIndex.from_documents(
        [Document(text=text, id_=name, metadata={"file": name}) for name, text in NOTES.items()],
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=embed_model,
    )
    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=2, vector_store_query_mode="hybrid"
    )
    response = engine.query("How does pgvector find nearest neighbours?")
    for source in response.source_nodes:
        print(f"source: {source.node.metadata['file']}  score {source.score:.3f}")
    print(str(response).strip())
    vector_store.client.close()


if __name__ == "__main__":
    main()
