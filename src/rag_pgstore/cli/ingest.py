"""``rag-pgstore ingest PATH...``: files, folders and globs into the collection.

Paths are checked before anything connects (a typo is an error, not an empty folder); files
are read by content (see ``pipeline/files.py``); documents gone from an ingested folder are
pruned. A folder walk leaves out hidden files, symlinks and binary files (counted); a file
that should be a document and cannot be read (named on the command line, unreadable, corrupt,
undecodable) is reported, skipped while the others land, and makes the exit code 3.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterator

from rag_pgstore.chunking import TokenChunker
from rag_pgstore.cli import models, output
from rag_pgstore.cli.progress import IngestProgress
from rag_pgstore.errors import CollectionNotFoundError
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.pipeline.files import FileSet, Skipped, find_files, read_document

EXIT_SKIPPED = 3


def run(args: argparse.Namespace) -> int:
    found = find_files(args.paths, hidden=args.hidden, follow_symlinks=args.follow)
    chunker = TokenChunker(max_tokens=args.max_tokens, overlap=args.overlap)
    try:
        store = models.open_store(args)
        store.setup()  # upgrades a collection an older version made (idempotent, cheap)
        recorded = models.recorded_embedder(store)
    except CollectionNotFoundError:
        name, dim = models.for_new_collection(args)
        store = models.open_store(args, create_dim=dim)
        recorded = None
        if not args.json:
            output.note(f"new collection {args.collection!r}, embedded with {name}")
    try:
        embedder = models.for_collection(args, store, recorded)
        skipped: list[Skipped] = []
        pipeline = Pipeline(
            store,
            embedder,
            chunker,
            replace_embedder=args.replace_embedder,
            writers=args.writers,
            embedding_cache=args.cache,
        )
        with IngestProgress(len(found.files), quiet=args.json) as show:
            args.interrupted = (
                (
                    lambda: (
                        "nothing of the bulk load was written, re-run to load it"
                        + (" (embeddings computed so far are cached)" if args.cache else "")
                    )
                )
                if args.bulk
                # "At least": a batch whose commit is under way as Ctrl-C lands may be
                # stored without the client learning it; a re-run finds it unchanged.
                else lambda: f"at least {show.report.documents} documents stored, re-run to resume"
            )
            report = pipeline.ingest(
                _documents(found, skipped, found.excluded, quiet=args.json),
                prune=found.folders if args.prune and not args.bulk else (),
                keep=os.path.lexists,  # pruned: files gone, not files skipped this time
                progress=show,
                bulk=args.bulk,
            )
        total = store.count()
    finally:
        store.close()
    if args.json:
        result = {
            "files": len(found.files),
            **vars(report),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
            "left_out": [{"path": s.path, "reason": s.reason} for s in found.excluded],
            "chunks": total,
        }
        print(json.dumps(result))
    else:
        print(
            f"{report.documents} documents: {report.unchanged} unchanged, "
            f"{report.chunks_written} chunks written, {report.embedded} embedded, "
            f"{report.from_cache} from the cache, {report.chunks_deleted} chunks deleted, "
            f"{report.documents_removed} documents removed (files gone); "
            f"{total} chunks in {args.collection!r}"
        )
        _report_left_out(skipped, found.excluded, verbose=args.verbose)
    return EXIT_SKIPPED if skipped else 0


def _documents(
    found: FileSet, skipped: list[Skipped], left_out: list[Skipped], *, quiet: bool
) -> Iterator[Document]:
    for path, named in found.files:
        doc = read_document(path, named=named)
        if isinstance(doc, Skipped):
            if doc.reason == "binary" and not named:
                left_out.append(doc)  # a folder's images and archives, as ripgrep leaves them
                continue
            skipped.append(doc)
            if not quiet:
                output.note(f"skipped {doc.path}: {doc.reason}")
            continue
        yield doc


def _report_left_out(skipped: list[Skipped], excluded: list[Skipped], *, verbose: bool) -> None:
    """Files that could not be read got a line each as they were met, and a count here;
    what a folder walk leaves out (hidden, symlinks, binary files) gets a count."""
    if verbose:
        for s in excluded:
            output.note(f"left out {s.path}: {s.reason}")
    for label, noun, group in (("skipped", "file", skipped), ("left out", "path", excluded)):
        if group:
            reasons = Counter(_kind(s.reason) for s in group)
            detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            plural = "" if len(group) == 1 else "s"
            more = "" if verbose or group is skipped else "; -v lists them"
            output.note(f"{label} {len(group)} {noun}{plural} ({detail}{more})")


def _kind(reason: str) -> str:
    return reason.split(":", maxsplit=1)[0].split(" (", maxsplit=1)[0]
