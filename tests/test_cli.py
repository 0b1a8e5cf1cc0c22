"""The rag-pgstore command as a newcomer meets it, through the real CLI in a subprocess on
real folders of awkward files: exit codes, messages, and what the store holds afterwards."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tiktoken", reason="the CLI chunks with tiktoken")
pytestmark = pytest.mark.extras

from rag_pgstore import ChunkStore
from rag_pgstore.testing import TestDatabase

HASH = ("--embedder", "hash", "--dim", "64")


def run(
    db: TestDatabase,
    collection: str,
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    url = db.url.render_as_string(hide_password=False)
    command = [
        sys.executable,
        "-m",
        "rag_pgstore.cli",
        *args,
        "--database-url",
        url,
        "--collection",
        collection,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd, input=stdin
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def stored(db: TestDatabase, collection: str) -> dict[str, str]:
    """Each stored document's text (its chunks joined), by document id."""
    store = ChunkStore.from_url(db.url, collection=collection)
    try:
        chunks = store.get_where()
        texts: dict[str, list[tuple[int, str]]] = {}
        for ch in chunks:
            texts.setdefault(ch.entity_id, []).append((ch.chunk_index, ch.content))
        return {k: "\n".join(t for _, t in sorted(v)) for k, v in texts.items()}
    finally:
        store.close()


def awkward_folder(root: Path) -> Path:
    """Files nobody here chose the names or encodings of."""
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.md").write_text('# Filters\n\nMetadata filters use dicts like {"topic": "db"}.\n')
    (root / "sub" / "b.txt").write_text("Bread needs flour, water and salt.\n\nBake it hot.")
    (root / "README").write_text("A README without a suffix explains the connection pool.\n")
    (root / "NEWS.Debian").write_text("Version 2 changed how timeouts are configured.\n")
    (root / "notes.saving").write_text("Saved notes about vector indexes and recall.\n")
    (root / "photo.bin").write_bytes(bytes(range(256)) * 8)
    (root / "utf16.txt").write_bytes("UTF-16 text about glaciers and moraines.".encode("utf-16"))
    (root / "utf16le-nobom.txt").write_bytes(
        "Little-endian UTF-16 with no mark, about volcanoes and lava fields.".encode("utf-16-le")
    )
    (root / "latin1.txt").write_bytes(
        "Café crème brûlée: a rich custard under caramel. Les crèmes brûlées sont délicieuses, "
        "et la crème fraîche aussi.\n".encode("latin-1")
    )
    (root / "changelog.gz").write_bytes(gzip.compress(b"Gzipped changelog: fixed the deadlock.\n"))
    (root / "renamed.txt").write_bytes(gzip.compress(b"A gzip file named .txt, about sourdough.\n"))
    (root / "page.html").write_text(
        "<!doctype html><html><head><title>Kayak guide</title><style>p{color:red}</style>"
        "</head><body><p>Paddle on the <b>left</b> side.</p><script>var tracking = 1;</script>"
        "</body></html>"
    )
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (root / "link.md").symlink_to(root / "a.md")
    return root


def test_an_awkward_folder_lands_whole_and_says_what_it_left_out(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    root = awkward_folder(tmp_path / "docs")
    (root / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    done = run(db, collection_name, "ingest", str(root), *HASH, "--json")
    assert done.returncode == 3, done.stderr  # done, but a file that should be text failed
    report = json.loads(done.stdout)
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.gz"]
    assert report["skipped"][0]["reason"].startswith("corrupt gzip data")
    assert {(Path(s["path"]).name, s["reason"].split(" (")[0]) for s in report["left_out"]} == {
        (".git", "hidden folder"),
        ("link.md", "symlink"),
        ("photo.bin", "binary"),
    }
    docs = stored(db, collection_name)
    names = {Path(k).name: v for k, v in docs.items()}
    assert set(names) == {
        "a.md", "b.txt", "README", "NEWS.Debian", "notes.saving", "utf16.txt",
        "utf16le-nobom.txt", "latin1.txt", "changelog.gz", "renamed.txt", "page.html",
    }  # fmt: skip
    assert "Café crème brûlée" in names["latin1.txt"]
    assert names["utf16.txt"].startswith("UTF-16 text about glaciers")
    assert "volcanoes" in names["utf16le-nobom.txt"]
    assert "fixed the deadlock" in names["changelog.gz"]
    assert "sourdough" in names["renamed.txt"]
    assert "Paddle on the" in names["page.html"] and "tracking" not in names["page.html"]
    assert "color:red" not in names["page.html"]
    # Ids are absolute paths; nothing under .git, the symlink is not read twice.
    assert all(k.startswith(root.as_posix() + "/") for k in docs)

    table = run(db, collection_name, "ingest", str(root), *HASH, "-v")
    assert table.returncode == 3
    assert "11 documents: 11 unchanged" in table.stdout
    assert f"skipped {root / 'broken.gz'}: corrupt gzip data" in table.stderr
    assert f"left out {root / 'photo.bin'}: binary" in table.stderr
    assert f"left out {root / '.git'}: hidden folder" in table.stderr
    assert f"left out {root / 'link.md'}: symlink" in table.stderr
    assert "left out 3 paths (1 hidden folder, 1 symlink, 1 binary)" in table.stderr

    (root / "broken.gz").unlink()
    clean = run(db, collection_name, "ingest", str(root), *HASH)
    assert clean.returncode == 0, clean.stderr  # only left-outs by policy: exit 0


def test_a_file_named_explicitly_is_never_skipped_silently(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    (tmp_path / "data.bin").write_bytes(b"\x00\x01\x02\x03" * 100)
    (tmp_path / "ok.txt").write_text("Fine text.")
    done = run(
        db, collection_name, "ingest", str(tmp_path / "data.bin"), str(tmp_path / "ok.txt"), *HASH
    )
    assert done.returncode == 3
    assert f"skipped {tmp_path / 'data.bin'}: binary" in done.stderr
    assert "1 documents" in done.stdout


def test_deleted_and_renamed_files_leave_the_collection(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    root = tmp_path / "notes"
    (root / "deep").mkdir(parents=True)
    (root / "keep.md").write_text("Keep this note about herons.")
    (root / "gone.md").write_text("This note about otters will be deleted.")
    (root / "deep" / "old_name.md").write_text("A note about kingfishers that moves.")
    (tmp_path / "notes_other").mkdir()  # a sibling whose name starts the same: never pruned
    (tmp_path / "notes_other" / "x.md").write_text("A sibling folder's note about egrets.")
    assert (
        run(
            db, collection_name, "ingest", str(root), str(tmp_path / "notes_other"), *HASH
        ).returncode
        == 0
    )

    (root / "gone.md").unlink()
    (root / "deep" / "old_name.md").rename(root / "new_name.md")
    kept = run(db, collection_name, "ingest", str(root), *HASH, "--no-prune", "--json")
    assert json.loads(kept.stdout)["documents_removed"] == 0
    assert len(stored(db, collection_name)) == 5  # old ones kept on request

    (root / "keep.md").write_bytes(bytes(range(256)) * 4)  # binary now: left out, not gone
    done = run(db, collection_name, "ingest", str(root), *HASH, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents_removed"] == 2
    assert sorted(Path(k).name for k in stored(db, collection_name)) == [
        "keep.md",
        "new_name.md",
        "x.md",
    ]
    otters = run(db, collection_name, "search", "otters", "--text", "--json")
    assert json.loads(otters.stdout) == []


def test_one_file_by_three_spellings_is_one_document(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("One file, however it is named.")
    for spelling in ("a.md", "./a.md", str(tmp_path / "a.md"), "../" + tmp_path.name + "/a.md"):
        assert run(db, collection_name, "ingest", spelling, *HASH, cwd=tmp_path).returncode == 0
    assert list(stored(db, collection_name)) == [(tmp_path / "a.md").as_posix()]


def test_path_mistakes_are_errors_and_create_nothing(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    for path, message in (
        (tmp_path / "no-such-folder", "expected a file or folder at"),
        (tmp_path / "missing.md", "expected a file or folder at"),
        (tmp_path / "nothing-*.md", "expected files matching"),
    ):
        done = run(db, collection_name, "ingest", str(path), *HASH)
        assert done.returncode == 1
        assert done.stderr.startswith(f"rag-pgstore: {message}") and done.stderr.count("\n") == 1
    listed = run(db, collection_name, "collections", "--json")
    assert collection_name not in {c["collection"] for c in json.loads(listed.stdout)}


def test_a_missing_collection_is_one_line_in_cli_terms(
    db: TestDatabase, collection_name: str
) -> None:
    for command in (
        ["stats"],
        ["doctor"],
        ["search", "anything"],
        ["search", "anything", "--text"],
        ["delete", "--entity", "x"],
        ["index", "create"],
    ):
        if command[0] == "index":
            url = db.url.render_as_string(hide_password=False)
            done = subprocess.run(
                [sys.executable, "-m", "rag_pgstore.cli", "index", "create", "--database-url",
                 url, "--collection", collection_name],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        else:
            done = run(db, collection_name, *command)
        assert done.returncode == 1, command
        assert done.stderr == (
            f"rag-pgstore: no collection named {collection_name!r}; `rag-pgstore collections` "
            f"lists what exists, `rag-pgstore ingest PATH --collection {collection_name}` "
            "creates it\n"
        ), command
        assert "setup()" not in done.stderr and "SELECT" not in done.stderr


def test_a_closed_pipe_ends_quietly(db: TestDatabase, collection_name: str, tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"n{i}.md").write_text(f"Note {i} about pipes and readers. " * 30)
    run(db, collection_name, "ingest", str(tmp_path), *HASH)
    url = db.url.render_as_string(hide_password=False)
    reader = subprocess.Popen(
        [sys.executable, "-m", "rag_pgstore.cli", "search", "pipes", "-k", "50", "--full",
         "--database-url", url, "--collection", collection_name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # `| head` that has seen enough
    _, err = reader.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    assert reader.returncode == 141


def test_the_embedder_is_recorded_and_a_mismatch_refused(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("Herons wade in shallow water.")
    assert run(db, collection_name, "ingest", str(tmp_path), *HASH).returncode == 0
    listed = json.loads(run(db, collection_name, "collections", "--json").stdout)
    (row,) = [c for c in listed if c["collection"] == collection_name]
    assert row["embedder"] == "hash:64" and row["dim"] == 64

    # Searching without --embedder uses the recorded one: no model to name, none loaded.
    found = run(db, collection_name, "search", "herons", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)[0]["text"].startswith("Herons")

    other = run(db, collection_name, "search", "herons", "--embedder", "hash", "--dim", "32")
    assert other.returncode == 1
    assert "was built with 'hash:64'" in other.stderr and "Leave out --embedder" in other.stderr
    (tmp_path / "b.md").write_text("Egrets too.")
    again = run(db, collection_name, "ingest", str(tmp_path), "--embedder", "local")
    assert again.returncode == 1 and "was built with 'hash:64'" in again.stderr
    assert "--replace-embedder" in again.stderr
    assert len(stored(db, collection_name)) == 1  # nothing written


def test_a_collection_written_from_python_needs_its_model_named(
    db: TestDatabase, collection_name: str
) -> None:
    from rag_pgstore import Chunk
    from rag_pgstore.pipeline.hashing import hash_embedding

    store = ChunkStore.from_url(db.url, collection=collection_name, dim=64)
    store.upsert(
        [Chunk(chunk_id="h", content="Herons wait.", embedding=hash_embedding("Herons wait.", 64))]
    )
    store.close()
    guessed = run(db, collection_name, "search", "herons")
    assert guessed.returncode == 1 and "no recorded embedder" in guessed.stderr
    named = run(db, collection_name, "search", "herons", *HASH, "--json")
    assert named.returncode == 0 and json.loads(named.stdout)[0]["chunk_id"] == "h"
    assert run(db, collection_name, "search", "herons", "--text").returncode == 0


def test_the_default_model_missing_is_an_error_not_a_silent_fallback(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("Text.")
    url = db.url.render_as_string(hide_password=False)
    blocked = (
        "import sys; sys.modules['sentence_transformers'] = None; "
        "from rag_pgstore.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked, "ingest", str(tmp_path), "--database-url", url,
         "--collection", collection_name],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "pip install 'rag-pgstore[local]'" in done.stderr and "--embedder hash" in done.stderr
    listed = json.loads(run(db, collection_name, "collections", "--json").stdout)
    assert collection_name not in {c["collection"] for c in listed}


def test_delete_drop_and_index_commands(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    root = tmp_path / "kb"
    (root / "team").mkdir(parents=True)
    (root / "a.md").write_text("About apples.")
    (root / "b.md").write_text("About bananas.")
    (root / "team" / "c.md").write_text("About cherries.")
    (root / "team" / "d.md").write_text("About dates.")
    assert run(db, collection_name, "ingest", str(root), *HASH).returncode == 0

    by_path = run(db, collection_name, "delete", "--path", str(root / "a.md"), cwd=tmp_path)
    assert by_path.returncode == 0 and "deleted 1 chunks" in by_path.stdout
    folder = run(db, collection_name, "delete", "--path", "kb/team", cwd=tmp_path)
    assert folder.returncode == 0 and "deleted 2 chunks" in folder.stdout
    assert sorted(Path(k).name for k in stored(db, collection_name)) == ["b.md"]
    nothing = run(db, collection_name, "delete", "--entity", "no-such-doc")
    assert nothing.returncode == 1 and "nothing to delete" in nothing.stderr
    by_filter = run(
        db, collection_name, "delete", "--filter", json.dumps({"source": str(root / "b.md")})
    )
    assert by_filter.returncode == 0 and stored(db, collection_name) == {}
    everything = run(db, collection_name, "delete", "--path", "/")
    assert everything.returncode == 1 and "without --yes" in everything.stderr
    bad = run(db, collection_name, "delete", "--filter", '{"source": "x"')
    assert bad.returncode == 2 and "ends early, after character 14" in bad.stderr

    built = run(db, collection_name, "index", "create", "--m", "8")
    assert built.returncode == 0 and "built an HNSW index (m=8" in built.stdout
    doctor = json.loads(run(db, collection_name, "doctor", "--json").stdout)
    assert doctor["ann_index"]["m"] == 8
    assert any("empty" in tip for tip in doctor["advice"])
    assert run(db, collection_name, "index", "drop").returncode == 0
    switched = run(db, collection_name, "keyword", "ts_rank")
    assert switched.returncode == 0 and "now ranks keywords with ts_rank" in switched.stdout
    doctor = json.loads(run(db, collection_name, "doctor", "--json").stdout)
    assert any("rag-pgstore keyword bm25" in tip for tip in doctor["advice"])
    assert "already" in run(db, collection_name, "keyword", "ts_rank").stdout

    refused = run(db, "unused", "drop", collection_name)  # no terminal, no --yes
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert run(db, collection_name, "stats").returncode == 0  # still there
    dropped = run(db, "unused", "drop", collection_name, "--yes")
    assert dropped.returncode == 0 and f"dropped {collection_name!r}" in dropped.stdout
    assert run(db, collection_name, "stats").returncode == 1


def test_ctrl_c_stops_within_seconds_and_says_how_to_resume(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    words = " ".join(f"word{i % 5000}" for i in range(40_000))
    for i in range(200):
        (tmp_path / f"big{i:03}.txt").write_text(f"File {i}. {words}")
    url = db.url.render_as_string(hide_password=False)
    ingest = subprocess.Popen(
        [sys.executable, "-m", "rag_pgstore.cli", "ingest", str(tmp_path), *HASH,
         "--database-url", url, "--collection", collection_name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert ingest.stderr is not None
    assert "new collection" in ingest.stderr.readline()  # the pipeline is starting
    time.sleep(2.0)
    assert ingest.poll() is None, "finished before it could be interrupted"
    sent = time.monotonic()
    ingest.send_signal(signal.SIGINT)
    _, err = ingest.communicate(timeout=30)
    assert time.monotonic() - sent < 3.0
    assert ingest.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rag-pgstore: interrupted; ") and last.endswith(
        "documents stored, re-run to resume"
    )
    said = last.split("; ")[1]
    assert said.startswith("at least ")
    n = int(said.split()[2])
    # The batches counted are stored; one committing as the signal landed may be too. Each
    # stored document is whole: a batch commits all of its chunks or none.
    store = ChunkStore.from_url(db.url, collection=collection_name)
    try:
        chunks = store.get_where()
    finally:
        store.close()
    by_document: dict[str, set[int]] = {}
    totals: dict[str, int] = {}
    for ch in chunks:
        by_document.setdefault(ch.entity_id, set()).add(ch.chunk_index)
        totals[ch.entity_id] = ch.total_chunks
    assert n <= len(by_document) < 200
    assert all(indexes == set(range(totals[d])) for d, indexes in by_document.items())


def test_search_shows_the_part_that_matched(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    filler = "Nothing to see in this sentence at all. " * 12
    (tmp_path / "long.md").write_text(filler + "The heron waits motionless in the reeds.")
    assert run(db, collection_name, "ingest", str(tmp_path), *HASH).returncode == 0
    shown = run(db, collection_name, "search", "heron reeds", "--text", "-k", "1")
    assert shown.returncode == 0
    assert "heron waits motionless in the reeds" in shown.stdout
    assert shown.stdout.splitlines()[2].lstrip().startswith("…")


def test_search_and_filter_errors(db: TestDatabase, collection_name: str, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("Text about filters.")
    assert run(db, collection_name, "ingest", str(tmp_path), *HASH).returncode == 0
    bad_filter = run(db, collection_name, "search", "x", "--filter", '{"a": {"$regex": "y"}}')
    assert bad_filter.returncode == 1 and "$regex" in bad_filter.stderr
    assert bad_filter.stderr.count("\n") == 1
    broken = run(db, collection_name, "search", "x", "--filter", "{'a': 1}")
    assert broken.returncode == 2 and "expected JSON" in broken.stderr
    assert "at character 2 (near \"{'a': 1}\")" in broken.stderr
    bad_url = subprocess.run(
        [sys.executable, "-m", "rag_pgstore.cli", "stats", "--database-url",
         "postgresql://nobody@127.0.0.1:1/none"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad_url.returncode == 1 and bad_url.stderr.startswith("rag-pgstore: ")
    assert "Traceback" not in bad_url.stderr


def test_main_job_answers_questions_about_the_docs_with_the_local_model(
    db: TestDatabase, collection_name: str
) -> None:
    root = Path(__file__).parent.parent
    ingest = run(
        db,
        collection_name,
        "ingest",
        str(root / "docs"),
        str(root / "README.md"),
        "--embedder",
        "local",
        "--json",
        timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["chunks_written"] > 10
    asked = run(
        db,
        collection_name,
        "search",
        "Which fusion does hybrid search use by default?",
        "-k",
        "3",
        "--hybrid",
        "--json",
        timeout=300,
    )
    assert asked.returncode == 0, asked.stderr
    hits = json.loads(asked.stdout)
    assert hits[0]["source"].endswith("docs/guide.md")
    assert "fus" in hits[0]["text"].lower()


def test_bulk_and_parallel_ingest_land_the_same_folder(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        (folder / f"note{i:02d}.md").write_text(f"# Note {i}\n\nNote {i} is about topic {i % 7}.\n")
    plain = run(db, f"{collection_name}_plain", "ingest", str(folder), *HASH, "--json")
    bulk = run(db, f"{collection_name}_bulk", "ingest", str(folder), *HASH, "--bulk", "--json")
    four = run(db, f"{collection_name}_four", "ingest", str(folder), *HASH, "--writers", "4")
    assert plain.returncode == bulk.returncode == four.returncode == 0, bulk.stderr + four.stderr
    assert json.loads(bulk.stdout)["chunks"] == json.loads(plain.stdout)["chunks"] == 60
    texts = stored(db, f"{collection_name}_plain")
    assert stored(db, f"{collection_name}_bulk") == texts == stored(db, f"{collection_name}_four")
    again = run(db, f"{collection_name}_bulk", "ingest", str(folder), *HASH, "--bulk")
    assert again.returncode == 1
    assert "to be empty for a bulk ingest" in again.stderr and len(again.stderr.splitlines()) == 1
    both = run(db, collection_name, "ingest", str(folder), *HASH, "--bulk", "--writers", "2")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    uncached = run(db, f"{collection_name}_nc", "ingest", str(folder), *HASH, "--no-cache")
    assert uncached.returncode == 0, uncached.stderr
    assert stored(db, f"{collection_name}_nc") == texts
