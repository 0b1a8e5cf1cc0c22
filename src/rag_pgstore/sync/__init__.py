"""Keep an application table embedded and in sync, with plain PostgreSQL objects.

>>> from rag_pgstore.sync import TableSync, add_sync, backfill, drain, sync_status
>>> add_sync(store, TableSync("products", table="shop.products", id="id",
...                           text=("title", "description"), collection="product_chunks"))
>>> backfill(store, "products", embedder); drain(store, "products", embedder)

A row trigger on the source table queues the ids of rows whose watched columns changed; a
worker (``drain``, or ``rag-pgstore sync run``) applies them. See docs/sync.md.
"""

from rag_pgstore.sync.manage import SyncStatus, add_sync, remove_sync, retry_parked, sync_status
from rag_pgstore.sync.spec import TableSync
from rag_pgstore.sync.worker import DrainReport, backfill, backfill_remaining, drain, watch

__all__ = [
    "DrainReport",
    "SyncStatus",
    "TableSync",
    "add_sync",
    "backfill",
    "backfill_remaining",
    "drain",
    "remove_sync",
    "retry_parked",
    "sync_status",
    "watch",
]
