"""Generate the sync driver (src/rag_pgstore/driver/sync.py) from the async one (aio.py).

    python scripts/gen_sync.py           # rewrite sync.py
    python scripts/gen_sync.py --check   # exit 1 if sync.py is not what aio.py generates

The rules, all mechanical: each ``if True:  # ASYNC`` block becomes its ``else`` (or
``elif``) branch;
``async def``/``async with``/``async for`` lose ``async``; ``await`` is dropped; async names
become their sync twins (``_NAMES``); the result is formatted with ruff. The async file is the
one that is edited and reviewed, as psycopg does for its pool.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src/rag_pgstore/driver/aio.py"
TARGET = ROOT / "src/rag_pgstore/driver/sync.py"
MARKER = "if True:  # ASYNC"
HEADER = '''"""The sync driver: run a plan's steps on an ``Engine``, in one transaction.

Generated from ``aio.py`` by ``python scripts/gen_sync.py``: edit that file, not this one.
"""
'''
_NAMES = {
    "AsyncConnection": "Connection",
    "AsyncEngine": "Engine",
    "anext": "next",
}
_KEYWORDS = [
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
    (re.compile(r"  # noqa: F401  \(the sync driver's\)"), ""),  # used there, unused in aio.py
]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _without_docstring(lines: list[str]) -> list[str]:
    """The module minus its docstring (the generated file gets its own)."""
    assert lines[0].startswith('"""'), "expected aio.py to start with its docstring"
    end = (
        0
        if lines[0].count('"""') == 2
        else next(i for i, line in enumerate(lines[1:], 1) if '"""' in line)
    )
    return lines[end + 1 :]


def _sync_branches(lines: list[str]) -> list[str]:
    """Replace each ``if True:  # ASYNC`` block by the body of its ``else``, dedented."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != MARKER:
            if "# ASYNC" in line:
                raise SystemExit(
                    f"aio.py:{i + 1}: expected exactly {MARKER!r}, got {line.strip()!r}"
                )
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            i += 1  # the async branch
        if i < len(lines) and lines[i].lstrip().startswith("elif ") and _indent(lines[i]) == base:
            lines[i] = lines[i].replace("elif ", "if ", 1)  # ruff folds ``else: if`` to ``elif``
            continue
        has_else = i < len(lines) and lines[i].strip() == "else:" and _indent(lines[i]) == base
        if not has_else:
            raise SystemExit(
                f"aio.py:{i + 1}: expected the else: of the block above (the sync branch) right "
                "after it, got " + (repr(lines[i].strip()) if i < len(lines) else "the end")
            )
        if has_else:
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                out.append(lines[i][4:] if lines[i].strip() else lines[i])
                i += 1
    return out


def generate() -> str:
    lines = _sync_branches(_without_docstring(SOURCE.read_text().splitlines()))
    text = "\n".join(lines) + "\n"
    for pattern, replacement in _KEYWORDS:
        text = pattern.sub(replacement, text)
    for name, sync_name in _NAMES.items():
        text = re.sub(rf"\b{name}\b", sync_name, text)
    text = text.replace("The async driver", "The sync driver")
    compile(HEADER + text, str(TARGET), "exec")  # a syntax error here, not in CI
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=HEADER + text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    fixed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--fix",
            "--quiet",
            "--stdin-filename",
            str(TARGET),
            "-",
        ],
        input=formatted.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    return subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=fixed.stdout,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def _check(source: str) -> None:
    """Raise if anything async is left in the generated code (strings aside)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    left = {
        token.string
        for token in tokens
        if (token.type == tokenize.NAME and _ASYNC_NAME.fullmatch(token.string))
        or (token.type == tokenize.COMMENT and "# ASYNC" in token.string)
    }
    if left:
        raise SystemExit(f"the generated sync driver still says {sorted(left)}; fix gen_sync.py")


_ASYNC_NAME = re.compile(r"async|await|asyncio|Async\w*")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if sync.py is stale")
    args = parser.parse_args()
    generated = generate()
    _check(generated)
    if args.check:
        if TARGET.read_text() != generated:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/gen_sync.py")
            return 1
        return 0
    TARGET.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
