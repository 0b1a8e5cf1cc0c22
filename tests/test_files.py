"""Reading files as documents: by content, in the right encoding, each file once."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest

from rag_pgstore import InvalidInputError
from rag_pgstore.pipeline import Document
from rag_pgstore.pipeline.files import Skipped, document_id, find_files, read_document

TEXT = "Café crème brûlée: a rich custard under caramel, servie très froide. Ça va?\n"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("utf8.txt", TEXT.encode()),
        ("utf8-bom.txt", b"\xef\xbb\xbf" + TEXT.encode()),
        ("utf16.txt", TEXT.encode("utf-16")),
        ("utf16be.txt", TEXT.encode("utf-16-be")),
        ("utf16le-nobom.txt", TEXT.encode("utf-16-le")),
        ("utf32.txt", TEXT.encode("utf-32")),
        ("latin1.txt", TEXT.encode("latin-1")),
        ("cp1252.txt", (TEXT + "\u201cquoted\u201d \u2013 dash\n").encode("cp1252")),
        ("notes.gz", gzip.compress(TEXT.encode())),
        ("renamed.txt", gzip.compress(TEXT.encode("utf-16"))),
        ("notes.bz2", bz2.compress(TEXT.encode())),
        ("notes.xz", lzma.compress(TEXT.encode())),
        ("README", TEXT.encode()),
    ],
)
def test_text_is_decoded_whatever_its_encoding(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    doc = read_document(path)
    assert isinstance(doc, Document), doc
    assert doc.text.startswith(TEXT.strip()), doc.text
    assert doc.id == document_id(path) and doc.metadata == {"source": doc.id}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(range(256)) * 4, "binary"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "binary"),
        (b"\x7fELF\x02\x01\x01" + bytes(range(100)) * 3, "binary"),
        (b"\x1f\x8b\x08\x00 broken", "corrupt gzip data"),
        (gzip.compress(bytes(range(256)) * 4), "binary"),
    ],
)
def test_binary_and_corrupt_files_are_skipped_with_a_reason(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    path = tmp_path / "file"
    path.write_bytes(data)
    skipped = read_document(path, named=True)
    assert isinstance(skipped, Skipped) and skipped.reason.startswith(reason)
    assert skipped.named and skipped.path == document_id(path)


def test_unreadable_files_are_skipped(tmp_path: Path) -> None:
    # A folder where a file was expected fails to read as a permission error would (and,
    # unlike one, also when the tests run as root).
    (tmp_path / "was-a-file").mkdir()
    skipped = read_document(tmp_path / "was-a-file")
    assert isinstance(skipped, Skipped)
    assert skipped.reason == "unreadable: Is a directory"


def test_html_becomes_its_visible_text(tmp_path: Path) -> None:
    page = tmp_path / "page"  # no suffix: recognised by content
    page.write_text(
        "<!DOCTYPE html><html><head><title>Kayaks &amp; canoes</title>"
        "<style>p { color: red }</style><script>var t = 1;</script></head>"
        "<body><h1>Paddling</h1><p>Keep the blade <em>vertical</em>.</p>"
        "<noscript>enable js</noscript><p>Caf&eacute;</p></body></html>"
    )
    doc = read_document(page)
    assert isinstance(doc, Document)
    assert doc.metadata == {"source": doc.id, "title": "Kayaks & canoes"}
    assert "Paddling" in doc.text and "vertical" in doc.text and "Café" in doc.text
    for hidden in ("color", "var t", "enable js", "Kayaks"):
        assert hidden not in doc.text


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    path = tmp_path / "paper.pdf"
    path.write_bytes(_pdf("Glaciers carve valleys"))
    doc = read_document(path)
    assert isinstance(doc, Document), doc
    assert "Glaciers carve valleys" in doc.text


def _pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` in Helvetica, built by hand (offsets computed)."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_find_files_walks_like_ripgrep(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".env").write_text("SECRET=1")
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "link.md").symlink_to(tmp_path / "a.md")
    (tmp_path / "linked").symlink_to(tmp_path / "sub")
    found = find_files([str(tmp_path)])
    assert [(p.name, named) for p, named in found.files] == [("a.md", False), ("b.txt", False)]
    assert sorted((Path(s.path).name, s.reason.split(" (")[0]) for s in found.excluded) == [
        (".env", "hidden file"),
        (".git", "hidden folder"),
        ("link.md", "symlink"),
        ("linked", "symlink"),
    ]
    assert found.folders == [tmp_path.as_posix() + "/"]

    everything = find_files([str(tmp_path)], hidden=True, follow_symlinks=True)
    names = sorted(p.name for p, _ in everything.files)
    # Each real file once, however many links lead to it.
    assert names == [".env", "HEAD", "a.md", "b.txt"]

    named = find_files([str(tmp_path / "link.md"), str(tmp_path / ".env")])
    assert [(p.name, n) for p, n in named.files] == [("link.md", True), (".env", True)]


def test_path_mistakes_raise(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="expected a file or folder at"):
        find_files([str(tmp_path / "missing")])
    with pytest.raises(InvalidInputError, match="expected files matching"):
        find_files([str(tmp_path / "*.nothing")])
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(InvalidInputError, match="broken symlink"):
        find_files([str(tmp_path / "dangling")])


def test_document_ids_are_canonical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.md").write_text("x")
    monkeypatch.chdir(tmp_path)
    spellings = ["a.md", "./a.md", str(tmp_path / "a.md"), f"../{tmp_path.name}/a.md"]
    assert {document_id(s) for s in spellings} == {(tmp_path / "a.md").as_posix()}


def test_symlink_loops_end_and_a_named_file_stays_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "note.md").write_text("n")
    (tmp_path / "a" / "up").symlink_to(tmp_path)  # a loop, through --follow
    (tmp_path / "a" / "data.bin").write_bytes(b"\x00" * 10)
    found = find_files([str(tmp_path), str(tmp_path / "a" / "data.bin")], follow_symlinks=True)
    assert sorted((p.name, named) for p, named in found.files) == [
        ("data.bin", True),  # named too: never left out silently
        ("note.md", False),
    ]
    assert any(s.reason == "symlink loop" for s in found.excluded)


def test_huge_files_are_refused_before_they_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_pgstore.pipeline import files

    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1024)
    path = tmp_path / "big.log"
    with path.open("wb") as f:
        f.truncate(10 * 1024)  # sparse: its size says so without the bytes
    skipped = read_document(path)
    assert isinstance(skipped, Skipped) and skipped.reason.startswith("over")
