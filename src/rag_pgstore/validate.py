"""Deprecated alias of :mod:`rag_pgstore.codec`, where input checks and encodings now live."""

from rag_pgstore.codec import (
    MAX_METADATA_DEPTH,
    MAX_NAME_LENGTH,
    check_batch,
    check_ids,
    check_name,
    encode_query,
    metadata_json,
)

__all__ = [
    "MAX_METADATA_DEPTH",
    "MAX_NAME_LENGTH",
    "check_batch",
    "check_ids",
    "check_name",
    "encode_query",
    "metadata_json",
]
