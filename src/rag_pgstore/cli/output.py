"""What the command line prints: errors as one line on stderr, fields as aligned lines or
JSON, and the consoles (colour only on a terminal, as ``rich`` decides)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit(1) on its own; the command's handler ends every closed pipe alike.
        raise BrokenPipeError


# Created on first use: rich reads the terminal's size and capabilities when it is built.
_consoles: dict[str, Console] = {}


def console(stream: str = "stdout") -> Console:
    if stream not in _consoles:
        _consoles[stream] = _Console(
            stderr=stream == "stderr", highlight=False, soft_wrap=stream == "stdout"
        )
    return _consoles[stream]


def error(message: str) -> None:
    first = " ".join(message.split())  # one line, whatever the message held
    print(f"rag-pgstore: {first}", file=sys.stderr)


def note(message: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays the result)."""
    print(message, file=sys.stderr)


def fields(values: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(values, default=str))
        return
    width = max(map(len, values))
    for key, value in values.items():
        print(f"{key:>{width}}  {value}")


def table(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
