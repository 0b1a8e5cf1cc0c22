"""``rag-pgstore serve`` as an operator runs it: a real process, keys from the environment,
JSON logs, a refusal to listen openly without keys, graceful shutdown with a request in
flight; and ``/readyz`` following the database down and back up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("tiktoken", reason="the server ingests documents with tiktoken")
pytestmark = pytest.mark.extras

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import embedded
from rag_pgstore.testing import TestDatabase
from tests.conftest import waiting_on_a_lock
from tests.serving import serving, settings_for

ROOT = Path(__file__).parent.parent
KEY = "operator-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    db: TestDatabase, collection: str, *args: str, keys: str | None = None
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAG_PGSTORE_API_KEYS"}
    if keys is not None:
        env["RAG_PGSTORE_API_KEYS"] = keys
    command = [
        sys.executable, "-m", "rag_pgstore.cli", "serve",
        "--database-url", db.url.render_as_string(hide_password=False),
        "--collection", collection, "--embedder", "hash", "--dim", "16", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_up(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_no_keys_means_this_machine_only(db: TestDatabase, collection_name: str) -> None:
    p = serve(db, collection_name, "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in err
    assert "Traceback" not in err
    p = serve(db, collection_name, "--port", str(free_port()), keys="write:short")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "at least 16 characters" in err
    p = serve(db, collection_name, "--port", str(free_port()), keys=KEY)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "read:SECRET or write:SECRET" in err
    assert KEY not in err  # a refused key is not echoed either


@pytest.mark.parametrize(
    ("stop", "exit_status"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["ctrl-c", "sigterm"],
)
def test_serve_logs_json_and_finishes_in_flight_requests(
    stop: signal.Signals,
    exit_status: int,
    db: TestDatabase,
    collection_name: str,
    engines: tuple[Engine, AsyncEngine],
    stopped: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = serve(db, collection_name, "--port", str(port), keys=f"write:{KEY}")
    stopped.append(p)
    wait_up(base, p)
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
        assert c.post("/v1/collections", json={"name": collection_name}).status_code == 201
        assert c.get("/v1/collections").status_code == 200
        assert httpx.get(f"{base}/v1/collections").status_code == 401
        answers: list[httpx.Response] = []
        with engines[0].connect() as lock:
            lock.execute(
                sa.text(
                    f'LOCK TABLE "{collection_name}" IN ACCESS EXCLUSIVE MODE'
                )  # a test's own name
            )
            body = {"chunks": [{"chunk_id": "late", "content": "written during shutdown"}]}
            writer = threading.Thread(
                target=lambda: answers.append(
                    c.post(f"/v1/collections/{collection_name}/chunks", json=body)
                )
            )
            writer.start()
            deadline = time.monotonic() + 30
            while not waiting_on_a_lock(lock) and time.monotonic() < deadline:
                time.sleep(0.05)
            p.send_signal(stop)
            time.sleep(1.0)
            assert p.poll() is None  # still serving the request in flight
            lock.rollback()  # releases the lock: the upsert goes through
            writer.join(30)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json() == {"written": 1, "embedded": 1}
    out, err = p.communicate(timeout=60)
    assert p.returncode == exit_status, err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r["logger"] == "rag_pgstore.access"]
    assert {(r["method"], r["route"], r["status"]) for r in access} >= {
        ("POST", "/v1/collections", 201),
        ("POST", "/v1/collections/{name}/chunks", 200),
        ("GET", "key_check", 401),
    }
    assert all(isinstance(r["duration_ms"], float) for r in access)
    assert any(
        "Shutting down" in r["message"] or "shutdown" in r["message"].lower() for r in records
    )
    assert KEY not in err and KEY not in out
    assert "color_message" not in err


def test_readyz_follows_the_database(tmp_path: Path, collection_name: str) -> None:
    server = embedded.start(tmp_path / "pg")
    database = TestDatabase(server.url, "embedded, stopped by this test")
    try:
        with serving(settings_for(database)) as base, httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/readyz").status_code == 200
            server.stop()
            down = c.get("/readyz")
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "database_unavailable"
            # What libpq said (socket paths, ports, role names) stays in the log.
            assert down.json()["error"]["message"].startswith("the database is unavailable")
            assert "socket" not in down.text and "postgres" not in down.text
            assert int(down.headers["retry-after"]) > 0
            assert "Traceback" not in down.text
            assert c.get("/healthz").status_code == 200  # the process itself is fine
            embedded.start(server.data_dir)
            assert c.get("/readyz").status_code == 200
            assert c.get("/v1/collections", headers=AUTH_READ).status_code == 200
    finally:
        server.stop()


AUTH_READ = {"X-API-Key": "read-key-0123456789abcdef"}


def test_the_readme_recipe_runs_as_written(tmp_path: Path) -> None:
    """The README's "Serve it over HTTP" commands, in bash, on an embedded server of its own."""
    if shutil.which("curl") is None:
        pytest.skip("the recipe uses curl, which this machine lacks")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("port 8080, which the recipe uses, is taken")
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Serve it over HTTP**") :]
    start = section.index("```bash\n") + len("```bash\n")
    recipe = section[start : section.index("\n```", start)]
    env = {**os.environ, "RAG_PGSTORE_DATA_DIR": str(tmp_path / "pg")}
    env.pop("DATABASE_URL", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", recipe],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        # The recipe's own processes are gone; the server they shared must not outlive them.
        if (tmp_path / "pg").exists():
            embedded.start(tmp_path / "pg").stop()
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["kind"] == "hybrid" and len(answer["results"]) == 3
    assert all(hit["entity_id"].startswith(str(ROOT / "docs")) for hit in answer["results"])
