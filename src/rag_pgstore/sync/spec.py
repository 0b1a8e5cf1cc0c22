"""What a table sync is: a source table, its id and the columns that make a document."""

from __future__ import annotations

from dataclasses import dataclass

from rag_pgstore.codec import check_name
from rag_pgstore.errors import InvalidInputError

__all__ = ["TableSync"]

_UNSAFE = frozenset('"\\,{}%')  # they would break the trigger's text[] argument or DDL
MAX_NAME = 63 - len("rag_pgstore_sync_")  # the trigger's name must fit PostgreSQL's 63


@dataclass(frozen=True)
class TableSync:
    """Keep ``collection`` embedded from ``table`` (``"schema.table"`` or ``"table"``).

    Each source row is one document: ``id`` its id, the ``text`` columns joined by blank
    lines its text, the ``metadata`` columns its metadata. ``name`` names the sync (its
    trigger, its queue rows). A change to any of these columns re-embeds the row's changed
    chunks; a change to another column does nothing.

    >>> TableSync("products", table="shop.products", id="id", text=("title", "description"),
    ...           metadata=("category", "price"), collection="product_chunks")
    """

    name: str
    table: str
    id: str
    text: tuple[str, ...]
    collection: str
    metadata: tuple[str, ...] = ()
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_name(self.name, "sync name")
        if len(self.name) > MAX_NAME:
            raise InvalidInputError(
                f"expected a sync name of at most {MAX_NAME} characters, got {len(self.name)}"
            )
        check_name(self.collection, "collection")
        object.__setattr__(self, "text", _columns(self.text, "text"))
        object.__setattr__(self, "metadata", _columns(self.metadata, "metadata", empty=True))
        (column,) = _columns((self.id,), "id")
        object.__setattr__(self, "id", column)
        if not isinstance(self.max_tokens, int) or self.max_tokens < 8:
            raise InvalidInputError(f"expected max_tokens >= 8, got {self.max_tokens!r}")
        self.source  # noqa: B018  (checks the table name)

    @property
    def source(self) -> tuple[str, str]:
        """(schema, table) of the source."""
        schema, _, table = self.table.rpartition(".")
        schema = schema or "public"
        for part in (schema, table):
            if not part or any(c in _UNSAFE or c.isspace() for c in part):
                raise InvalidInputError(
                    f"expected table as schema.table or table, got {self.table!r}"
                )
        return schema, table


def _columns(given: object, what: str, *, empty: bool = False) -> tuple[str, ...]:
    if isinstance(given, str):
        given = [c.strip() for c in given.split(",")]
    if not isinstance(given, (list, tuple)):
        raise InvalidInputError(f"expected {what} columns as a list, got {given!r}")
    columns = tuple(c.strip() for c in given if isinstance(c, str) and c.strip())
    if len(columns) != len(given) or (not columns and not empty):
        raise InvalidInputError(f"expected {what} to name one or more columns, got {given!r}")
    for c in columns:
        if any(ch in _UNSAFE for ch in c):
            raise InvalidInputError(f"expected a column name without {sorted(_UNSAFE)}, got {c!r}")
    return columns
