"""Token-budgeted chunking with tiktoken (``pip install 'rag-pgstore[tiktoken]'``).

>>> from rag_pgstore.chunking import TokenChunker
>>> chunks = TokenChunker(max_tokens=256, overlap=32).chunk(text, entity_id="guide.md")
"""

from rag_pgstore.chunking.encodings import load_encoding
from rag_pgstore.chunking.splitter import TextChunk, TokenChunker

__all__ = ["TextChunk", "TokenChunker", "load_encoding"]
