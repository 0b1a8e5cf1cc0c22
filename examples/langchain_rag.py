"""A LangChain retrieval chain over rag-pgstore, on the embedded PostgreSQL (or $DATABASE_URL).

    python examples/langchain_rag.py

The chain retrieves with hybrid search and fills a prompt; pipe the prompt into any chat model
(`| ChatOpenAI()`, `| ChatOllama()`, ...) to get an answer. The embeddings here are the
deterministic hashing ones so the example runs anywhere; use any LangChain `Embeddings`.
"""

from __future__ import annotations

import os

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore

NOTES = [
    ("postgres.md", "PostgreSQL keeps data in tables and runs every change in a transaction."),
    ("pgvector.md", "pgvector stores embeddings in a vector column and finds nearest neighbours."),
    ("hnsw.md", "An HNSW index makes nearest-neighbour search fast at a small cost in recall."),
    ("baking.md", "Bread rises because yeast turns sugar into carbon dioxide."),
]


def main() -> None:
    vs = LangChainVectorStore.from_texts(
        [text for _, text in NOTES],
        HashEmbeddings(256),
        metadatas=[{"source": source} for source, _ in NOTES],
        ids=[source for source, _ in NOTES],
        url=os.environ.get("DATABASE_URL"),
        collection="langchain_rag_example",
    )
    retriever = vs.as_retriever(search_type="hybrid", search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_template(
        "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}"
    )

    def context(docs: list[Document]) -> str:
        return "\n".join(f"[{d.metadata['source']}] {d.page_content}" for d in docs)

    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(
        prompt=(lambda x: {"context": context(x["docs"]), "question": x["question"]}) | prompt
    )
    result = chain.invoke("How does pgvector find nearest neighbours?")
    print("sources:", ", ".join(d.metadata["source"] for d in result["docs"]))
    print(result["prompt"].to_string())
    vs.store.close()


if __name__ == "__main__":
    main()
