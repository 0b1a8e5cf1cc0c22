"""The Dockerfile and compose file cannot run here (no Docker engine), so check what can go
wrong without one: the command parses with our own parser, the paths and extras exist, the
ports, health check and environment agree with what the server reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file")
tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
pytest.importorskip("fastapi", reason="the server extra is not installed")
pytestmark = pytest.mark.extras

from rag_pgstore.cli import serve
from rag_pgstore.cli.parser import build_parser
from rag_pgstore.server import create_app

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"


def instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_runs_a_command_we_accept() -> None:
    steps = instructions()
    cmd = json.loads(next(rest for word, rest in steps if word == "CMD"))
    assert cmd[0] == "rag-pgstore"
    args = build_parser().parse_args(cmd[1:])  # exits (fails the test) on a wrong flag
    assert args.run is serve.run and args.host == "0.0.0.0"
    exposed = int(next(rest for word, rest in steps if word == "EXPOSE"))
    assert args.port == exposed
    health = next(rest for word, rest in steps if word == "HEALTHCHECK")
    path = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", health)
    assert path and int(path.group(1)) == exposed
    assert path.group(2) in create_app().openapi()["paths"]
    for word, rest in steps:
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = [rest for word, rest in steps if word == "RUN" and '".[' in rest]
    assert installs, "the image installs this checkout"
    for wanted in re.findall(r'"\.\[([^\]]+)\]"', installs[0])[0].split(","):
        assert wanted in extras, wanted
    assert any(word == "USER" and rest != "root" for word, rest in steps)


def test_compose_wires_the_database_keys_and_port() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    db, api = compose["services"]["db"], compose["services"]["api"]
    assert db["image"].startswith("pgvector/pgvector:")
    build = api["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    ).resolve()
    env = api["environment"]
    assert set(env) == {"DATABASE_URL", serve.KEYS_ENV}
    assert ":?" in env[serve.KEYS_ENV]  # compose refuses to start without keys
    url = env["DATABASE_URL"]
    assert url.startswith("postgresql://") and "@db:5432/" in url
    user, database = db["environment"]["POSTGRES_USER"], db["environment"]["POSTGRES_DB"]
    assert url.startswith(f"postgresql://{user}:") and url.endswith(f"/{database}")
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    host, container = api["ports"][0].rsplit(":", 1)[0], api["ports"][0].rsplit(":", 1)[1]
    assert host.startswith("127.0.0.1:") and int(container) == 8080
    grace = int(api["stop_grace_period"].rstrip("s"))
    assert grace > build_parser().parse_args(["serve"]).shutdown_timeout
