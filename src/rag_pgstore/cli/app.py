"""Run one command: parse, dispatch, and turn every expected failure into one line and an
exit code (never a traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rag_pgstore.cli import output
from rag_pgstore.cli.parser import build_parser
from rag_pgstore.errors import CollectionNotFoundError, RagPgStoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: `rag-pgstore stats | head`


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        status = getattr(args, "interrupted", None)
        output.error("interrupted" + (f"; {status()}" if status else ""))
        return EXIT_INTERRUPTED
    except CollectionNotFoundError as exc:
        name = exc.name or args.collection
        output.error(
            f"no collection named {name!r}; `rag-pgstore collections` lists what exists, "
            f"`rag-pgstore ingest PATH --collection {name}` creates it"
        )
        return EXIT_FAILED
    except RagPgStoreError as exc:
        output.error(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
