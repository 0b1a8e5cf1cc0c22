"""The drivers: the only code that touches a connection.

``run`` (sync) and ``run_async`` drive a plan (``ops/``) to completion in one transaction, or a
single :class:`Read` in one round trip. ``sync.py`` is generated from ``aio.py``.
"""

from rag_pgstore.driver.aio import run as run_async
from rag_pgstore.driver.policy import translate
from rag_pgstore.driver.steps import (
    Copy,
    Execute,
    Fetch,
    Forget,
    IndexedForm,
    Plan,
    PlanSource,
    Pull,
    Read,
    Step,
)
from rag_pgstore.driver.sync import run

__all__ = [
    "Copy",
    "Execute",
    "Fetch",
    "Forget",
    "IndexedForm",
    "Plan",
    "PlanSource",
    "Pull",
    "Read",
    "Step",
    "run",
    "run_async",
    "translate",
]
