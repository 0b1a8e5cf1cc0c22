"""What every benchmark shares: interleaved repeated runs, and a results page with its command."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).parent.parent / "docs" / "results"
RESULTS_ENV = "BENCHMARK_RESULTS_DIR"  # the smoke test writes elsewhere, not over the real results


def interleaved(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Median seconds of each run, alternating them so drift on the machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def write(
    name: str, title: str, notes: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Write docs/results/<name>.md (and print it): the command, the machine, then a table."""
    command = " ".join(["python", "-m", f"benchmarks.{name.replace('-', '_')}", *sys.argv[1:]])
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}` (Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} cores; client and server on the same machine). {notes}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    results = Path(os.environ.get(RESULTS_ENV) or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
