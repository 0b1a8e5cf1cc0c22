"""``ChunkStore``: the whole public surface of a collection, sync and async.

Every operation is a plan from ``ops/`` run by a driver: ``store.search(...)`` is
``run(engine, ops.reads.search(collection, ...))``, ``await store.asearch(...)`` the same plan
on the async engine. The table at the end of the class pairs each operation with its plan, so
the sync and async forms cannot drift apart: they share the plan, its signature and its
documentation.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import os
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import driver, embedded
from rag_pgstore.codec import check_name, check_tenant
from rag_pgstore.connect import make_async_engine, make_engine, make_engines
from rag_pgstore.driver.steps import Execute, Plan
from rag_pgstore.embedded import EmbeddedPostgres
from rag_pgstore.errors import DatabaseUnavailableError, UnsupportedError
from rag_pgstore.ops import lifecycle, reads, registry, writes
from rag_pgstore.replicas import ReadRouting, Replica, check_standby, identity
from rag_pgstore.schema import TENANT_SETTING, Collection
from rag_pgstore.sql.writes import set_local_many
from rag_pgstore.types import CollectionSummary, Distance, KeywordSearch, choice

__all__ = ["ChunkStore"]

P = ParamSpec("P")
T = TypeVar("T")
Operation = Callable[Concatenate[Collection, P], driver.PlanSource[T]]


def _sync(operation: Operation[P, T]) -> Callable[Concatenate[ChunkStore, P], T]:
    """The store method that runs ``operation``'s plan on the sync engine."""

    def method(self: ChunkStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run_plan(operation(self.collection, *args, **kwargs))

    return _named(method, operation, operation.__name__, inspect.getdoc(operation) or "")


def _read(operation: Operation[P, T]) -> Callable[Concatenate[ChunkStore, P], T]:
    """The store method that runs ``operation``'s plan on a replica if the store has one fit
    for it (else on the primary); the plan is built afresh for each engine tried."""

    def method(self: ChunkStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run_read(lambda: operation(self.collection, *args, **kwargs))

    return _named(method, operation, operation.__name__, inspect.getdoc(operation) or "")


def _aread(
    operation: Operation[P, T],
) -> Callable[Concatenate[ChunkStore, P], Coroutine[Any, Any, T]]:
    """Async :func:`_read`."""

    async def method(self: ChunkStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.arun_read(lambda: operation(self.collection, *args, **kwargs))

    doc = f"Async :meth:`{operation.__name__}`.\n\n{inspect.getdoc(operation) or ''}"
    return _named(method, operation, "a" + operation.__name__, doc)


def _async(
    operation: Operation[P, T],
) -> Callable[Concatenate[ChunkStore, P], Coroutine[Any, Any, T]]:
    """The store method that runs ``operation``'s plan on the async engine."""

    async def method(self: ChunkStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.arun_plan(operation(self.collection, *args, **kwargs))

    doc = f"Async :meth:`{operation.__name__}`.\n\n{inspect.getdoc(operation) or ''}"
    return _named(method, operation, "a" + operation.__name__, doc)


M = TypeVar("M", bound=Callable[..., Any])


def _named(method: M, operation: Callable[..., Any], name: str, doc: str) -> M:
    """Make ``help(ChunkStore.name)`` show the method: its name, its doc, ``self`` in place of
    the plan's collection, and no plan in the return annotation."""
    signature = inspect.signature(operation)
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    rest = list(signature.parameters.values())[1:]
    method.__name__, method.__qualname__ = name, f"ChunkStore.{name}"
    method.__doc__ = doc
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[this, *rest], return_annotation=inspect.Signature.empty
    )
    return method


class ChunkStore:
    """A collection of chunks in one PostgreSQL table, searchable by vector, text or both.

    The constructor does no I/O: pass engines you built (``postgresql+psycopg``), then call
    :meth:`setup` (or :meth:`asetup`) once to create the table. :meth:`from_url` does both.

    >>> store = ChunkStore.from_url(None, collection="docs", dim=384)   # embedded Postgres
    >>> store.upsert([Chunk(chunk_id="a#0", content="...", embedding=vec)])
    >>> hits = store.search(query_vec, k=5, filter={"topic": "db"})

    ``replicas`` (streaming standbys of the primary) take the reads: searches, gets, counts
    and ``describe``, in turn; writes and every other plan go to the primary. After a write
    through this store, reads go to the primary for ``read_your_writes`` seconds (0: never);
    a replica whose connection fails is skipped for ``replica_retry_after`` seconds.

    ``tenancy=True`` creates the collection with a ``tenant_id`` in its primary key; its rows
    are then reached only through :meth:`for_tenant` views. ``row_security=True`` (with
    tenancy) has :meth:`setup` add a row-level security policy on the tenant, for roles that
    do not own the table. See docs/tenancy.md.
    """

    def __init__(
        self,
        engine: Engine | None,
        async_engine: AsyncEngine | None = None,
        *,
        collection: str,
        dim: int,
        distance: Distance | str = Distance.COSINE,
        schema: str = "public",
        text_config: str = "english",
        keyword: KeywordSearch | str | None = None,
        partitions: int | None = None,
        tenancy: bool | None = None,
        row_security: bool = False,
        create_extension: bool = True,
        replicas: Sequence[Replica] = (),
        read_your_writes: float = 5.0,
        replica_retry_after: float = 30.0,
    ) -> None:
        if engine is None and async_engine is None:
            raise UnsupportedError("expected an engine, an async_engine or both, got neither")
        for which in (engine, async_engine):
            if which is not None and which.dialect.driver != "psycopg":
                raise UnsupportedError(
                    f"expected an engine on the psycopg driver, got {which.dialect.driver!r}; "
                    "create it from a postgresql+psycopg:// URL"
                )
        self.collection = Collection(
            name=collection,
            dim=dim,
            schema=schema,
            distance=Distance.parse(distance),
            text_config=text_config,
            keyword=None if keyword is None else choice(KeywordSearch, keyword, "keyword"),
            partitions=partitions,
            tenancy=tenancy,
        )
        if not isinstance(row_security, bool):
            raise UnsupportedError(f"expected row_security to be a bool, got {row_security!r}")
        self.row_security = row_security
        self.engine = engine
        self.async_engine = async_engine
        self.create_extension = create_extension
        self.reads = ReadRouting(
            replicas, read_your_writes=read_your_writes, retry_after=replica_retry_after
        )
        self._owned: tuple[Engine | None, AsyncEngine | None] = (None, None)
        self._owned_replicas: tuple[Replica, ...] = ()
        self._server: EmbeddedPostgres | None = None
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    @classmethod
    def from_url(
        cls,
        url: str | URL | None,
        *,
        collection: str,
        dim: int | None = None,
        setup: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        replicas: Sequence[str | URL] = (),
        tenant: str | None = None,
        **options: Any,
    ) -> ChunkStore:
        """Connect to ``url`` (``None``: the embedded local server) and make sure the table exists.

        ``url`` may be a SQLAlchemy URL or the plain ``postgresql://``/``postgres://`` form of
        ``DATABASE_URL``; query parameters such as ``sslmode`` pass through to libpq.
        ``engine_options`` go to ``create_engine`` (pool sizes, ``connect_args``). ``data_dir``
        places the embedded server's data. Other keyword arguments are the constructor's.
        ``setup=False`` skips schema creation, e.g. for a read-only role. Without ``dim`` the
        collection must exist: its dimension, distance and keyword mode are read from the
        registry (:class:`CollectionNotFoundError` if there is none), and nothing is created.

        ``replicas``: URLs of streaming standbys of ``url`` that take the reads (see the
        class); each is checked now, and one that is unreachable, a primary, or a standby of
        another cluster is refused with a typed error before anything is written.

        ``tenant``: the store is :meth:`for_tenant` ``tenant`` from the start (and owns its
        engines, unlike a view).
        """
        if tenant is not None:
            check_tenant(tenant)
        server = embedded.start(data_dir) if url is None else None
        store = cls._connect(
            server.url if server else url,
            collection,
            1 if dim is None else dim,  # 1: a placeholder until the registry is read
            engine_options,
            options,
            replica_urls=replicas,
        )
        store._server = server
        try:
            store._check_replicas()
            if dim is None:
                c = store.collection
                store.collection = store.run_plan(lambda: registry.opened(c, options))
            elif setup:
                store.setup()
            if tenant is not None:
                store._scope_to(tenant)
        except BaseException:
            store.close()  # no pooled connection outlives a store the caller never got
            raise
        return store

    @classmethod
    async def afrom_url(
        cls,
        url: str | URL | None,
        *,
        collection: str,
        dim: int | None = None,
        setup: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        replicas: Sequence[str | URL] = (),
        tenant: str | None = None,
        **options: Any,
    ) -> ChunkStore:
        """Async :meth:`from_url`: the schema is set up on the async engine.

        Starting the embedded server runs its ``pg_ctl`` subprocess in a worker thread, once,
        so the event loop is not blocked while it waits.
        """
        if tenant is not None:
            check_tenant(tenant)
        server = await asyncio.to_thread(embedded.start, data_dir) if url is None else None
        store = cls._connect(
            server.url if server else url,
            collection,
            1 if dim is None else dim,  # 1: a placeholder until the registry is read
            engine_options,
            options,
            replica_urls=replicas,
        )
        store._server = server
        try:
            await store._acheck_replicas()
            if dim is None:
                c = store.collection
                store.collection = await store.arun_plan(lambda: registry.opened(c, options))
            elif setup:
                await store.asetup()
            if tenant is not None:
                store._scope_to(tenant)
        except BaseException:
            await store.aclose()
            raise
        return store

    @classmethod
    def open(
        cls, engine: Engine | None, async_engine: AsyncEngine | None = None, **options: Any
    ) -> ChunkStore:
        """Open an existing collection on engines you own, its dimension, distance and text
        configuration read from the registry (:class:`CollectionNotFoundError` if it has
        none). Keyword arguments are the constructor's, without ``dim``.

        >>> store = ChunkStore.open(engine, collection="docs")
        """
        store = cls(engine, async_engine, dim=1, **options)  # 1: until the registry is read
        c = store.collection
        store.collection = store.run_plan(lambda: registry.opened(c, options))
        return store

    @classmethod
    async def aopen(
        cls, engine: Engine | None, async_engine: AsyncEngine | None = None, **options: Any
    ) -> ChunkStore:
        """Async :meth:`open`: the registry is read on the async engine."""
        store = cls(engine, async_engine, dim=1, **options)
        c = store.collection
        store.collection = await store.arun_plan(lambda: registry.opened(c, options))
        return store

    @classmethod
    def list_collections(
        cls,
        url: str | URL | None,
        *,
        schema: str = "public",
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> list[CollectionSummary]:
        """The collections in ``schema`` at ``url`` (``None``: the embedded server), by name,
        with their chunk and document counts, settings and recorded embedder."""
        check_name(schema, "schema")
        target = embedded.start(data_dir).url if url is None else url
        engine = make_engine(target, engine_options)
        try:
            return driver.run(engine, lambda: registry.collections(schema))
        finally:
            engine.dispose()

    @classmethod
    async def alist_collections(
        cls,
        url: str | URL | None,
        *,
        schema: str = "public",
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> list[CollectionSummary]:
        """Async :meth:`list_collections`."""
        check_name(schema, "schema")
        if url is None:
            url = (await asyncio.to_thread(embedded.start, data_dir)).url
        engine = make_async_engine(url, engine_options)
        try:
            return await driver.run_async(engine, lambda: registry.collections(schema))
        finally:
            await engine.dispose()

    @classmethod
    def _connect(
        cls,
        url: str | URL | None,
        collection: str,
        dim: int,
        engine_options: Mapping[str, Any] | None,
        options: dict[str, Any],
        *,
        replica_urls: Sequence[str | URL] = (),
    ) -> ChunkStore:
        assert url is not None
        if isinstance(replica_urls, (str, URL)):
            raise UnsupportedError(
                f"expected replicas to be a list of URLs, got one: {type(replica_urls).__name__}"
            )
        engine, async_engine = make_engines(url, engine_options)
        replicas = tuple(Replica(*make_engines(r, engine_options)) for r in replica_urls)
        try:
            store = cls(
                engine, async_engine, collection=collection, dim=dim, replicas=replicas, **options
            )
        except BaseException:
            for r in replicas:
                assert r.engine is not None
                r.engine.dispose()
            engine.dispose()
            raise
        store._owned = (engine, async_engine)
        store._owned_replicas = replicas
        return store

    def _check_replicas(self) -> None:
        if not self.reads.replicas:
            return
        primary = self.run_plan(identity, read_only=True)
        for replica in self.reads.replicas:
            assert replica.engine is not None
            try:
                found = driver.run(replica.engine, identity)
            except DatabaseUnavailableError as exc:
                raise _unreachable(replica, exc) from exc
            check_standby(replica.name, found, primary)

    async def _acheck_replicas(self) -> None:
        if not self.reads.replicas:
            return
        primary = await self.arun_plan(identity, read_only=True)
        for replica in self.reads.replicas:
            assert replica.async_engine is not None
            try:
                found = await driver.run_async(replica.async_engine, identity)
            except DatabaseUnavailableError as exc:
                raise _unreachable(replica, exc) from exc
            check_standby(replica.name, found, primary)

    def for_tenant(self, tenant: str) -> ChunkStore:
        """This store, scoped to ``tenant``: every read, write, delete, search, count and
        ``clear`` touches that tenant's rows only, and the same ids in two tenants are two
        chunks. The view shares the store's engines (closing it closes nothing); the
        collection must have tenancy (``tenancy=True`` at creation).

        >>> acme = store.for_tenant("acme")
        >>> acme.upsert(chunks); acme.search(vec, k=5)   # never another tenant's rows
        """
        view = copy.copy(self)
        view._scope_to(tenant)
        view._owned, view._owned_replicas, view._server = (None, None), (), None
        return view

    def _scope_to(self, tenant: str) -> None:
        check_tenant(tenant)
        c = self.collection
        if not c.tenancy:
            known = "was not created with tenancy" if c.tenancy is False else "may not have it"
            raise UnsupportedError(
                f"expected a collection with tenancy for tenant {tenant!r}, got "
                f"{c.name!r}, which {known}; create it with tenancy=True (or open it with "
                "ChunkStore.open / from_url, which read what it has)"
            )
        self.collection = c.for_tenant(tenant)

    def _scoped(self, plan: driver.PlanSource[T]) -> driver.PlanSource[T]:
        """``plan``, first setting a tenant view's tenant for its transaction (``SET LOCAL``):
        the ``tenant_id`` default of new rows and the row-security policy read it."""
        tenant = self.collection.tenant
        if tenant is None:
            return plan
        if callable(plan):
            build = plan
            return lambda: _in_tenant(tenant, build())
        return _in_tenant(tenant, plan)

    def __repr__(self) -> str:
        bound = self.engine or self.async_engine
        assert bound is not None
        url = bound.url.render_as_string(hide_password=True)
        c = self.collection
        return (
            f"ChunkStore(collection={c.name!r}, dim={c.dim}, "
            f"distance={c.distance.value!r}, url={url!r})"
        )

    # -- running plans -------------------------------------------------------------------------

    def run_plan(self, plan: driver.PlanSource[T], *, read_only: bool = False) -> T:
        """Run one plan from ``rag_pgstore.ops`` in a transaction on the sync engine (the
        primary's).

        Every method here is one such call. Pass a function that builds the plan
        (``lambda: ...``) to have a transaction PostgreSQL aborted to break a deadlock run again
        from a fresh plan. With replicas, a plan counts as a write (reads go to the primary
        for ``read_your_writes`` seconds after it) unless ``read_only``.
        """
        if self.engine is None:
            _discard(plan)
            raise UnsupportedError(
                "this store has no sync engine; use the a* methods or pass engine="
            )
        if not read_only:
            self.reads.wrote()
        return driver.run(self.engine, self._scoped(plan))

    def run_read(self, build: Callable[[], driver.PlanSource[T]]) -> T:
        """Run the plan ``build()`` makes on a replica fit for it, else on the primary; a
        replica that fails to answer (its connection) sits out and the next engine gets a
        fresh plan. ``build`` is called once for each engine tried."""
        for replica in self.reads.order():
            if replica.engine is None:
                continue
            try:
                return driver.run(replica.engine, self._scoped(build()))
            except DatabaseUnavailableError:
                self.reads.failed(replica)
        return self.run_plan(build(), read_only=True)

    async def arun_read(self, build: Callable[[], driver.PlanSource[T]]) -> T:
        """Async :meth:`run_read`."""
        await self._same_loop()
        for replica in self.reads.order():
            if replica.async_engine is None:
                continue
            try:
                return await driver.run_async(replica.async_engine, self._scoped(build()))
            except DatabaseUnavailableError:
                self.reads.failed(replica)
        return await self.arun_plan(build(), read_only=True)

    async def arun_plan(self, plan: driver.PlanSource[T], *, read_only: bool = False) -> T:
        """Async :meth:`run_plan`."""
        if self.async_engine is None:
            _discard(plan)
            raise UnsupportedError(
                "this store has no async engine; pass async_engine= to use a* methods"
            )
        await self._same_loop()
        if not read_only:
            self.reads.wrote()
        return await driver.run_async(self.async_engine, self._scoped(plan))

    async def _same_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop() is not loop:
            # Pooled async connections belong to the loop that opened them. A new loop (a second
            # asyncio.run, a framework's own loop) gets a fresh pool; closing the idle ones is
            # safe here because psycopg closes a connection without awaiting its old loop.
            for engine in (self.async_engine, *(r.async_engine for r in self.reads.replicas)):
                if engine is not None:
                    await engine.dispose()
        self._loop = weakref.ref(loop)

    # -- schema --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the table and its indexes, or upgrade them; safe to call any number of times.

        Safe from several processes at once; rebuilds a table dropped behind the store's back.
        """
        c = self.collection
        self.run_plan(lifecycle.prepare(c, create_extension=self.create_extension))
        self._tenancy_is(self.run_plan(lifecycle.setup(c, rls=self.row_security)))

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        c = self.collection
        await self.arun_plan(lifecycle.prepare(c, create_extension=self.create_extension))
        self._tenancy_is(await self.arun_plan(lifecycle.setup(c, rls=self.row_security)))

    def _tenancy_is(self, tenancy: bool) -> None:
        # Statements name tenant_id only when the table has it: known once set up.
        if self.collection.tenancy is None:
            self.collection = dataclasses.replace(self.collection, tenancy=tenancy)

    def set_keyword_search(self, keyword: KeywordSearch | str) -> bool:
        """Switch the collection's keyword search (``"bm25"``, ``"ts_rank"`` or ``"off"``);
        ``False`` if it has it already. Rewrites every row's keyword columns in one
        transaction under the table's exclusive lock: reads and writes wait for it."""
        changed = self.run_plan(lifecycle.set_keyword_search(self.collection, keyword))
        self._keyword_switched(keyword)
        return changed

    async def aset_keyword_search(self, keyword: KeywordSearch | str) -> bool:
        """Async :meth:`set_keyword_search`."""
        changed = await self.arun_plan(lifecycle.set_keyword_search(self.collection, keyword))
        self._keyword_switched(keyword)
        return changed

    def enable_tenancy(self, tenant: str) -> bool:
        """Give the collection tenancy in place, every chunk it holds becoming ``tenant``'s;
        ``False`` if it has it already. Reads and writes wait while the primary key is built
        again; see docs/tenancy.md."""
        changed = self.run_plan(lifecycle.enable_tenancy(self.collection, tenant))
        self.collection = dataclasses.replace(self.collection, tenancy=True)
        return changed

    async def aenable_tenancy(self, tenant: str) -> bool:
        """Async :meth:`enable_tenancy`."""
        changed = await self.arun_plan(lifecycle.enable_tenancy(self.collection, tenant))
        self.collection = dataclasses.replace(self.collection, tenancy=True)
        return changed

    def _keyword_switched(self, keyword: KeywordSearch | str) -> None:
        # A store opened with an explicit mode now reads the new one.
        if self.collection.keyword is not None:
            self.collection = dataclasses.replace(
                self.collection, keyword=choice(KeywordSearch, keyword, "keyword")
            )

    # -- every other operation: the plan, sync and async -----------------------------------

    drop = _sync(lifecycle.drop)
    adrop = _async(lifecycle.drop)
    create_index = _sync(lifecycle.create_index)
    acreate_index = _async(lifecycle.create_index)
    drop_index = _sync(lifecycle.drop_index)
    adrop_index = _async(lifecycle.drop_index)
    describe = _read(lifecycle.describe)
    adescribe = _aread(lifecycle.describe)
    analyze = _sync(lifecycle.analyze)
    aanalyze = _async(lifecycle.analyze)

    upsert = _sync(writes.upsert)
    bulk_load = _sync(writes.bulk_load)
    abulk_load = _async(writes.bulk_load)
    aupsert = _async(writes.upsert)
    delete = _sync(writes.delete)
    adelete = _async(writes.delete)
    delete_entities = _sync(writes.delete_entities)
    adelete_entities = _async(writes.delete_entities)
    delete_where = _sync(writes.delete_where)
    adelete_where = _async(writes.delete_where)
    clear = _sync(writes.clear)
    aclear = _async(writes.clear)

    get = _read(reads.get)
    aget = _aread(reads.get)
    get_where = _read(reads.get_where)
    aget_where = _aread(reads.get_where)
    count = _read(reads.count)
    acount = _aread(reads.count)
    search = _read(reads.search)
    asearch = _aread(reads.search)
    search_like = _read(reads.search_like)
    asearch_like = _aread(reads.search_like)
    mmr_search = _read(reads.mmr_search)
    ammr_search = _aread(reads.mmr_search)
    hybrid_search = _read(reads.hybrid_search)
    ahybrid_search = _aread(reads.hybrid_search)
    text_search = _read(reads.text_search)
    atext_search = _aread(reads.text_search)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the engines :meth:`from_url` created (engines you passed are yours)."""
        engine, _ = self._owned
        for owned in (engine, *(r.engine for r in self._owned_replicas)):
            if owned is not None:
                owned.dispose()

    async def aclose(self) -> None:
        """Dispose of both engines :meth:`from_url` created."""
        engine, async_engine = self._owned
        for owned in (engine, *(r.engine for r in self._owned_replicas)):
            if owned is not None:
                owned.dispose()
        for aowned in (async_engine, *(r.async_engine for r in self._owned_replicas)):
            if aowned is not None:
                await aowned.dispose()


def _unreachable(replica: Replica, exc: DatabaseUnavailableError) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"expected replica {replica.name} to answer, got: {exc}; check its URL, or start the "
        "store without it",
        sqlstate=exc.sqlstate,
    )


def _in_tenant(tenant: str, plan: Plan[T]) -> Plan[T]:
    yield Execute(set_local_many({TENANT_SETTING: tenant}))
    return (yield from plan)


def _discard(plan: driver.PlanSource[Any]) -> None:
    if not callable(plan):
        plan.close()
