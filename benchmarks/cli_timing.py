"""Wall time of everyday CLI commands, this version against an earlier one, side by side.

    python -m benchmarks.cli_timing [--before d8367b1] [--repeat 3]

Each command runs as a user runs it: a fresh ``python -m rag_pgstore.cli`` process on the
embedded server in a data folder of its own per version (started by every command: nothing
keeps it up between commands). The earlier version is the
``src/`` of ``--before``, extracted with ``git archive``; both ingest this repository's docs
with the local model into their own collection first. Results go to
``docs/results/cli-timing.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
OUT = ROOT / "docs" / "results" / "cli-timing.md"
QUESTION = "Which fusion does hybrid search use by default?"


def extract(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` under ``into``; the path to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into / "src"


def timed(src: Path, data: Path, args: list[str]) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(src), "RAG_PGSTORE_DATA_DIR": str(data)}
    env.pop("DATABASE_URL", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rag_pgstore.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,  # the exit code is part of the result
    )
    return time.perf_counter() - started, done.returncode


def measure(src: Path, data: Path, collection: str, repeat: int) -> dict[str, float | None]:
    common = ["--collection", collection]
    ingest = ["ingest", "docs", "README.md", "--embedder", "local", *common]
    seconds, code = timed(src, data, ingest)
    assert code in (0, 3), f"ingest failed with {code}"
    commands = {
        "ingest, nothing changed": ingest,
        "stats": ["stats", *common],
        "doctor": ["doctor", *common],
        "search, a new question": None,  # a question never asked: the model loads
        "search, asked before": ["search", QUESTION, "--hybrid", *common, "--embedder", "local"],
        "search --text": ["search", "hybrid fusion", "--text", *common],
        "bad URL": ["stats", "--database-url", "postgresql://u@127.0.0.1:1/x", *common],
    }
    results: dict[str, float | None] = {"ingest, first run": seconds}
    timed(src, data, ["search", QUESTION, "--hybrid", *common, "--embedder", "local"])
    for name, command in commands.items():
        samples = []
        for i in range(repeat):
            if command is None:
                fresh = ["search", f"{QUESTION} ({time.time_ns()}-{i})", "--hybrid", *common]
                args = [*fresh, "--embedder", "local"]
            else:
                args = command
            seconds, code = timed(src, data, args)
            if code == 2:  # the command or flag does not exist in that version
                break
            samples.append(seconds)
        results[name] = statistics.median(samples) if samples else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="d8367b1", help="the earlier revision")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # A data folder each: the embedding cache would otherwise serve one the other's work.
        old_src = extract(args.before, base / "before")
        before = measure(old_src, base / "pg-before", "docs", args.repeat)
        after = measure(ROOT / "src", base / "pg-after", "docs", args.repeat)
    rows = []
    for name in before:
        old, new = before[name], after[name]
        ratio = f"{old / new:.1f}x" if old and new else "-"
        rows.append(f"| {name} | {_s(old)} | {_s(new)} | {ratio} |")
    command = f"python -m benchmarks.cli_timing --before {args.before} --repeat {args.repeat}"
    OUT.write_text(
        "\n".join(
            [
                "# CLI wall time, before and after",
                "",
                f"Produced by `{command}` on this machine (2 cores). Each command is a fresh "
                "process, as a user runs it, on the embedded server (which each command "
                "starts: nothing keeps it up in between), median of "
                f"{args.repeat}. *Before* is `{args.before}`, *after* this version; both "
                "ingested this repository's docs with the local model first.",
                "",
                "| command | before (s) | after (s) | faster |",
                "|---|---|---|---|",
                *rows,
                "",
                "Before, every command loaded the embedding model (about 6 s of importing "
                "torch and sentence-transformers) whether it embedded anything or not. Now a "
                "command connects first and loads the model only for a text it must embed: "
                "`stats`, `doctor`, `--text` searches, an ingest with nothing changed and a "
                "question asked before (its embedding is in the embedding cache) never load "
                "it. A new question still pays for the model once per process; `--text` "
                "answers without it.",
                "",
            ]
        )
    )
    print(OUT.read_text())


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
