"""``rag-pgstore``: ingest folders of documents, search them, and look after the collections.

    rag-pgstore ingest docs/ "notes/**/*.md"
    rag-pgstore search "how do I filter by metadata?" -k 5 --hybrid
    rag-pgstore collections
    rag-pgstore stats
    rag-pgstore doctor

The embedded local Postgres is used unless ``--database-url`` or ``$DATABASE_URL`` names a
server. ``--json`` prints machine-readable output. Exit codes: 0 done, 1 failed, 2 bad
usage, 3 done but some files were skipped (listed on stderr), 130 interrupted.

``parser`` holds the arguments, ``ingest``/``search``/``manage`` the commands, ``models`` the
choice of embedding model, ``output`` what is printed and how errors become one line.
"""

from __future__ import annotations

from rag_pgstore.cli.app import main

__all__ = ["main"]
