"""Read the collection registry: what exists, what a collection was made with, and which
embedding model wrote its vectors, as plans (see ``driver/steps.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from rag_pgstore.driver.steps import Execute, Fetch, Plan
from rag_pgstore.errors import CollectionNotFoundError, SchemaError
from rag_pgstore.schema import (
    Collection,
    registry_table,
    stored_keyword,
    stored_partitions,
    stored_tenancy,
)
from rag_pgstore.types import CollectionSummary, Distance

__all__ = ["claim_embedder", "collections", "missing", "opened", "registered"]


def missing(c: Collection) -> CollectionNotFoundError:
    """The error for a collection that is not in the registry."""
    return CollectionNotFoundError(
        f"expected a collection named {c.name!r} in schema {c.schema!r}, found none; "
        "create it with setup() (or list what exists with ChunkStore.list_collections)",
        name=c.name,
    )


def registered(schema: str, name: str) -> Plan[Mapping[str, Any] | None]:
    """The registry row of collection ``name``; ``None`` if there is none (or no registry)."""
    rows = yield from _rows(schema, name)
    return rows[0] if rows else None


def _rows(schema: str, name: str | None = None) -> Plan[list[dict[str, Any]]]:
    """Registry rows as dicts of the columns the registry has: read with ``to_jsonb(row)``,
    so a registry made by an older version (without the newer columns) reads too, without
    the ALTER that only ``setup()`` may run."""
    registry = registry_table(schema)
    exists = yield Fetch(sa.select(sa.func.to_regclass(f"{schema}.{registry.name}")))
    if exists[0][0] is None:
        return []
    query = sa.select(sa.func.to_jsonb(registry.table_valued())).order_by(registry.c.name)
    if name is not None:
        query = query.where(registry.c.name == name)
    rows = yield Fetch(query)
    return [row[0] for row in rows]


def opened(c: Collection, options: Mapping[str, Any]) -> Plan[Collection]:
    """Collection ``c`` as it was created: its dimension, distance and text configuration read
    from the registry. Options the caller gave (``distance``, ``text_config``, ``keyword``)
    may not disagree with it; without ``keyword`` the registry decides it at each read."""
    row = yield from registered(c.schema, c.name)
    if row is None:
        raise missing(c)
    given = {
        "distance": c.distance.value if "distance" in options else None,
        "text_config": c.text_config if "text_config" in options else None,
        "keyword": c.keyword.value if c.keyword is not None else None,
        "partitions": c.partitions,
        "tenancy": c.tenancy,
    }
    have = {
        **row,
        "keyword": stored_keyword(row.get("keyword")).value,
        "partitions": stored_partitions(row),
        "tenancy": stored_tenancy(row),
    }
    for field, want in given.items():
        if want is not None and want != have[field]:
            raise SchemaError(
                f"collection {c.name!r} was created with {field}={have[field]!r}, got "
                f"{field}={want!r}; open it with {field}={have[field]!r} or use another "
                "collection"
            )
    return dataclasses.replace(
        c,
        dim=row["dim"],
        distance=Distance.parse(row["distance"]),
        text_config=row["text_config"],
        partitions=stored_partitions(row),
        tenancy=stored_tenancy(row),
        tenant=c.tenant if stored_tenancy(row) else None,
    )


def collections(schema: str) -> Plan[list[CollectionSummary]]:
    """Every collection in ``schema`` with its counts, by name; none when there is no registry."""
    found: list[CollectionSummary] = []
    for r in (yield from _rows(schema)):
        c = Collection(name=r["name"], dim=r["dim"], schema=schema)
        present = yield Fetch(sa.select(sa.func.to_regclass(f"{schema}.{c.name}")))
        if present[0][0] is None:
            continue  # dropped behind our back; setup() forgets the row
        t = c.bare_table()
        [(chunks, entities)] = yield Fetch(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(t.c.entity_id)))
        )
        found.append(
            CollectionSummary(
                name=c.name,
                schema=schema,
                chunks=chunks,
                entities=entities,
                dim=r["dim"],
                distance=r["distance"],
                # As recorded: one collection set up by a newer version must not make
                # the whole listing fail.
                keyword=r.get("keyword") or "ts_rank",
                embedder=r.get("embedder"),
                ann_index=r["ann_index"],
            )
        )
    return found


def claim_embedder(c: Collection, name: str, *, replace: bool = False) -> Plan[str | None]:
    """Record ``name`` as the model that writes the collection's vectors; return the one
    recorded before (``None`` at the first ingest).

    A different recorded model raises :class:`SchemaError`: vectors of two models in one
    collection make every search wrong without a sign of it. ``replace=True`` records the new
    one instead (after re-embedding, or when the names differ but the model is the same).
    """
    registry = c.registry
    # The row lock makes two first ingests with different models take turns: the second
    # sees the first one's record.
    rows = yield Fetch(
        sa.select(registry.c.embedder).where(registry.c.name == c.name).with_for_update()
    )
    if not rows:
        raise missing(c)
    recorded: str | None = rows[0][0]
    if recorded == name:
        return recorded
    if recorded is not None and not replace:
        raise SchemaError(
            f"collection {c.name!r} was embedded with {recorded!r}, got {name!r}: their "
            f"vectors do not compare. Use {recorded!r} or another collection; "
            "replace_embedder=True records the new one (what is stored is not re-embedded: "
            "clear() first to switch models)"
        )
    yield Execute(sa.update(registry).where(registry.c.name == c.name).values(embedder=name))
    return recorded
