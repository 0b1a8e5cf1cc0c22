"""Files and folders -> :class:`Document` s: which files to read, and their text.

What a file holds is decided by its content, not its name: compressed files (gzip, bzip2,
xz) are read through, PDFs are read with ``pypdf`` when it is installed, everything else is
text if it decodes as text (BOMs, UTF-8, then ``charset-normalizer`` for the rest: UTF-16
without a BOM, Latin-1, cp1252, ...) and binary if it does not. HTML is reduced to its
visible text with Beautiful Soup; Markdown and the rest are kept as they are.

A document's id is its file's absolute path with ``.`` and ``..`` resolved (symlinks are not
resolved), so ``a.md``, ``./a.md`` and ``/home/me/a.md`` are one document, the same from any
working directory.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import io
import lzma
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_pgstore.errors import InvalidInputError
from rag_pgstore.pipeline.batches import Document

__all__ = ["FileSet", "Skipped", "document_id", "find_files", "read_document"]

MAX_FILE_BYTES = 256 * 1024 * 1024  # after decompression
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_SNIFF = 8192
_HTML_START = re.compile(rb"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
_BLANK_RUNS = re.compile(r"\n\s*\n(\s*\n)+")
_PREFERRED = ("utf_8", "cp1252", "latin_1", "iso8859_15")
_BOMS = (  # the UTF-32 ones first: their BOMs start with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Skipped:
    """A file that was not read, and why; ``named`` if the caller named it explicitly."""

    path: str
    reason: str
    named: bool = False


@dataclass(frozen=True)
class FileSet:
    """What :func:`find_files` found: the files to read (named ones flagged), what it left
    out by policy (hidden, symlinks), and the folders walked (as id prefixes, for pruning)."""

    files: list[tuple[Path, bool]] = field(default_factory=list)
    excluded: list[Skipped] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def document_id(path: str | os.PathLike[str]) -> str:
    """The id of the document read from ``path``: absolute, normalised, ``/``-separated."""
    return Path(os.path.abspath(path)).as_posix()


def find_files(
    paths: Sequence[str], *, hidden: bool = False, follow_symlinks: bool = False
) -> FileSet:
    """The files under ``paths`` (files, folders walked recursively, globs), each once.

    Like ripgrep, a folder walk leaves out hidden files and folders (``.git``) unless
    ``hidden``, and does not follow symlinks unless ``follow_symlinks``; a file or symlink
    named explicitly is always read. A path that does not exist, or a glob that matches
    nothing, raises :class:`InvalidInputError`: a typo must not look like an empty folder.
    """
    found = FileSet()
    # Real paths: a file reached twice (through a link, or named and in a folder) is read
    # once, and counts as named if it was named either way.
    seen: dict[str, int] = {}

    def add(path: Path, named: bool) -> None:
        real = os.path.realpath(path)
        if real not in seen:
            seen[real] = len(found.files)
            found.files.append((path, named))
        elif named:
            first, _ = found.files[seen[real]]
            found.files[seen[real]] = (first, True)

    for pattern in paths:
        if glob.has_magic(pattern) and not os.path.lexists(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise InvalidInputError(f"expected files matching {pattern!r}, found none")
            named = False
        else:
            if not os.path.lexists(pattern):
                raise InvalidInputError(f"expected a file or folder at {pattern!r}, found none")
            if os.path.islink(pattern) and not os.path.exists(pattern):
                raise InvalidInputError(f"expected {pattern!r} to lead somewhere: broken symlink")
            matches, named = [pattern], True
        for match in matches:
            path = Path(match)
            if path.is_dir():
                found.folders.append(document_id(path).rstrip("/") + "/")
                for file in _walk(path, hidden, follow_symlinks, found.excluded):
                    add(file, False)
            elif path.is_file():
                add(path, named)
            elif named:
                raise InvalidInputError(f"expected a regular file or folder at {match!r}")
    return found


def _walk(root: Path, hidden: bool, follow: bool, excluded: list[Skipped]) -> Iterator[Path]:
    visited: set[tuple[int, int]] = set()  # folders by (device, inode): links cannot loop

    def unlisted(error: OSError) -> None:
        where = document_id(error.filename or root)
        excluded.append(Skipped(where, f"unreadable folder: {error.strerror or error}"))

    for folder, dirs, files in os.walk(root, followlinks=follow, onerror=unlisted):
        base = Path(folder)
        try:
            info = os.stat(base)
        except OSError:  # gone since it was listed
            continue
        if (info.st_dev, info.st_ino) in visited:
            excluded.append(Skipped(document_id(base), "symlink loop"))
            dirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        kept = []
        for name in sorted(dirs):
            if not hidden and name.startswith("."):
                excluded.append(Skipped(document_id(base / name), "hidden folder (--hidden)"))
            elif not follow and (base / name).is_symlink():
                excluded.append(Skipped(document_id(base / name), "symlink (--follow)"))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = base / name
            if not hidden and name.startswith("."):
                excluded.append(Skipped(document_id(path), "hidden file (--hidden)"))
            elif path.is_symlink() and not follow:
                excluded.append(Skipped(document_id(path), "symlink (--follow)"))
            elif path.is_file():
                yield path


def read_document(path: Path, *, named: bool = False) -> Document | Skipped:
    """The document in ``path``, or why it cannot be one (binary, unreadable, too large)."""
    doc_id = document_id(path)
    try:
        doc_id.encode()
    except UnicodeEncodeError:  # a name in another encoding than the file system's
        shown = doc_id.encode(errors="backslashreplace").decode()
        return Skipped(shown, "file name is not valid UTF-8: rename it", named)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:  # before reading it into memory
            raise _NotText(f"over {MAX_FILE_BYTES >> 20} MiB")
        data = _expanded(path.read_bytes())
        text, title = _text(data, path)
    except OSError as exc:
        return Skipped(doc_id, f"unreadable: {exc.strerror or exc}", named)
    except _NotText as exc:
        return Skipped(doc_id, str(exc), named)
    except Exception as exc:  # one odd file (a parser's bug) must not end the whole run
        return Skipped(doc_id, f"unreadable: {type(exc).__name__}: {exc}", named)
    metadata = {"source": doc_id} if title is None else {"source": doc_id, "title": title}
    return Document(id=doc_id, text=text, metadata=metadata)


class _NotText(Exception):
    """The file holds no text we can read; the message says what it holds."""


def _expanded(data: bytes) -> bytes:
    """``data``, decompressed if it is gzip, bzip2 or xz (by content, not by name)."""
    openers: tuple[tuple[bytes, str, Callable[[io.BytesIO], io.BufferedIOBase]], ...] = (
        (b"\x1f\x8b", "gzip", lambda raw: gzip.GzipFile(fileobj=raw)),
        (b"BZh", "bzip2", bz2.BZ2File),
        (b"\xfd7zXZ\x00", "xz", lzma.LZMAFile),
    )
    for magic, name, opener in openers:
        if data.startswith(magic):
            try:
                with opener(io.BytesIO(data)) as stream:
                    inner = stream.read(MAX_FILE_BYTES + 1)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
                raise _NotText(f"corrupt {name} data ({exc})") from None
            if len(inner) > MAX_FILE_BYTES:
                raise _NotText(f"over {MAX_FILE_BYTES >> 20} MiB once decompressed")
            return inner
    if len(data) > MAX_FILE_BYTES:
        raise _NotText(f"over {MAX_FILE_BYTES >> 20} MiB")
    return data


def _text(data: bytes, path: Path) -> tuple[str, str | None]:
    """The readable text of ``data`` and its title (HTML, PDF), or :class:`_NotText`."""
    if data.startswith(b"%PDF-"):
        return _pdf_text(data)
    text = decode(data)
    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz")
    if Path(name).suffix in HTML_SUFFIXES or _HTML_START.match(data[:_SNIFF]):
        return _html_text(text)
    return text, None


def decode(data: bytes) -> str:
    """``data`` as text: by its BOM, as UTF-8, else in the encoding ``charset-normalizer``
    finds; :class:`_NotText` when it is binary."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(encoding))
            except UnicodeDecodeError:
                raise _NotText(f"binary (not valid {encoding} after its BOM)") from None
    try:
        if b"\x00" not in data[:_SNIFF]:
            return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise _NotText("binary")
    # Short texts often fit several code pages equally well (cp1250 reads Latin-1's "è" as
    # "č"): among equally good readings take the most common encoding.
    best = matches[0]
    tied = {
        m.encoding: m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)
    }
    best = next((tied[e] for e in _PREFERRED if e in tied), best)
    if b"\x00" in data[:_SNIFF] and not best.encoding.startswith("utf_"):
        raise _NotText("binary")
    return _checked(str(best))


def _checked(text: str) -> str:
    """``text`` unless it looks like binary data that happened to decode."""
    sample = text[:_SNIFF]
    controls = sum(
        1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v"
    )
    if "\x00" in text or controls > len(sample) // 10:
        raise _NotText("binary")
    return text


def _html_text(html: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag is not None else None
    for invisible in soup(["head", "script", "style", "noscript", "template"]):
        invisible.decompose()
    text = _BLANK_RUNS.sub("\n\n", soup.get_text("\n")).strip()
    return text, title or None


def _pdf_text(data: bytes) -> tuple[str, str | None]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise _NotText("PDF: pip install 'rag-pgstore[pdf]' to read PDFs") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata is not None else None
    except (PdfReadError, ValueError, KeyError) as exc:
        raise _NotText(f"unreadable PDF ({exc})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise _NotText("PDF without a text layer (scanned?)")
    return _checked(text), title or None
