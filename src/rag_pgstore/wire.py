"""Query vectors bound in pgvector's binary format, with no per-connection type lookup.

pgvector's own psycopg adapters need ``register_vector`` on every connection (a round trip to
find the type's oid, and loaders that would change what every other query on that pooled
connection returns). A parameter sent in binary with oid 0 lets the server infer its type
from the statement (``embedding <=> $1``) and read it with ``vector_recv``/``halfvec_recv``,
which is all a query vector needs: no text formatting of hundreds of floats, no lookup.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = ["WireVector", "wire_vector"]


@dataclass(frozen=True, slots=True)
class WireVector:
    """A vector already in PostgreSQL's binary wire format."""

    data: bytes


class _WireVectorDumper(Dumper):
    format = Format.BINARY
    oid = 0  # unknown: the server infers vector or halfvec from the statement

    def dump(self, obj: WireVector) -> bytes:
        return obj.data


# Global, but only for our own class: nothing else anyone binds changes.
psycopg.adapters.register_dumper(WireVector, _WireVectorDumper)


def wire_vector(values: Sequence[float] | npt.NDArray[np.float64], vector_type: str) -> WireVector:
    """``values`` (already validated) as ``vector``/``halfvec`` binary: dim, unused, elements."""
    element = ">f2" if vector_type == "halfvec" else ">f4"
    body = np.asarray(values, dtype=element).tobytes()
    return WireVector(struct.pack(">HH", len(values), 0) + body)
