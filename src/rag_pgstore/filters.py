"""Deprecated alias of :mod:`rag_pgstore.sql.filters`, where the filter compiler now lives."""

from rag_pgstore.sql.filters import COLUMN_KEYS, MAX_DEPTH, OPERATORS, compile_filter

__all__ = ["COLUMN_KEYS", "MAX_DEPTH", "OPERATORS", "compile_filter"]
