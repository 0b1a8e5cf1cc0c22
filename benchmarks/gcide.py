"""Real text for keyword-search benchmarks: the GCIDE English dictionary, in dictd format.

Debian's ``dict-gcide`` package puts ~200k entries under ``/usr/share/dictd/``: an index of
``headword<TAB>offset<TAB>length`` lines (numbers in dictd's base64) and the text, gzipped.
:func:`ensure` installs the package with apt when it is missing (benchmarks only: the test
suite never needs it).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEFAULT_DIR", "ensure", "entries"]

DEFAULT_DIR = Path("/usr/share/dictd")
_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _DIGITS.index(char)
    return value


def ensure(directory: Path = DEFAULT_DIR) -> Path:
    """The dictionary's directory, installing ``dict-gcide`` with apt if it is not there."""
    if (directory / "gcide.index").exists():
        return directory
    if directory != DEFAULT_DIR or shutil.which("apt-get") is None:
        raise SystemExit(f"no gcide.index in {directory}; install dict-gcide or pass --gcide DIR")
    print("installing dict-gcide with apt-get (a one-time ~15 MB download)")
    subprocess.run(["apt-get", "install", "-y", "-qq", "dict-gcide"], check=True)
    return directory


def entries(directory: Path = DEFAULT_DIR, limit: int | None = None) -> Iterator[tuple[str, str]]:
    """``(headword, text)`` for each entry, in index order, skipping dictd's own metadata."""
    with gzip.open(directory / "gcide.dict.dz") as compressed:  # dictzip is gzip-compatible
        data = compressed.read()
    count = 0
    with open(directory / "gcide.index", encoding="utf-8") as index:
        for line in index:
            headword, offset, length = line.rstrip("\n").split("\t")[:3]
            if headword.startswith("00-database"):
                continue
            start = _number(offset)
            text = data[start : start + _number(length)].decode("utf-8", errors="replace")
            yield headword, text.strip()
            count += 1
            if limit is not None and count >= limit:
                return
