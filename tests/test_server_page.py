"""The search page in a real headless browser (the system's chromium, driven by Playwright):
load ``/``, give the key, search, and read the ranked chunks back from the DOM.

Saves the screenshot the README shows (docs/images/search-page.png, see ``shot``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("tiktoken", reason="the server ingests documents with tiktoken")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.extras

import httpx

from rag_pgstore.pipeline.embedders import LOCAL_MODEL, local_model_installed
from rag_pgstore.testing import TestDatabase
from tests.serving import READ_KEY, WRITE_KEY, serving, settings_for

ROOT = Path(__file__).parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "search-page.png"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "NO BROWSER: the search page test needs chromium (apt-get install chromium); "
        ".ci/run installs it"
    )


@pytest.fixture(scope="module")
def site(db: TestDatabase) -> Iterator[str]:
    collection = "page_docs"
    # The bundled model when it is installed: the screenshot shows what a user would see.
    model = f"local:{LOCAL_MODEL}" if local_model_installed() else "hash:32"
    with serving(settings_for(db, collection=collection, embedder=model)) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=120) as c:
            c.delete(f"/v1/collections/{collection}")
            assert c.post("/v1/collections", json={"name": collection}).status_code == 201
            pages = sorted((ROOT / "docs").glob("*.md"))
            documents = [
                {"id": f"docs/{p.name}", "text": p.read_text(), "metadata": {"page": p.stem}}
                for p in pages
            ]
            r = c.post(
                f"/v1/collections/{collection}/documents",
                json={"documents": documents, "max_tokens": 160},
            )
            assert r.status_code == 200, r.text
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def shot(tmp_path: Path) -> Path:
    """docs/images/search-page.png when it is missing or RAG_PGSTORE_UPDATE_SCREENSHOT=1 (so
    a test run does not leave the checkout changed), else a file of this test's own."""
    if not SCREENSHOT.exists() or os.environ.get("RAG_PGSTORE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT
    return tmp_path / "search-page.png"


def test_search_from_the_page(site: str, browser: object, shot: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(site + "/")
    # Without a key the API says so, and the page shows it.
    page.wait_for_selector("#status:has-text('401')")
    page.click("#more summary")
    page.fill("#key", READ_KEY)
    page.dispatch_event("#key", "change")
    page.wait_for_selector("#collection option[value=page_docs]", state="attached")
    assert page.input_value("#collection") == "page_docs"  # the server's --collection first
    page.click("#more summary")  # folded again: the key stays in the field

    question = "how do I filter search results by metadata"
    page.fill("#query", question)
    page.fill("#k", "4")
    page.click("#go")
    page.wait_for_selector("#results li.hit")
    shown = [
        {
            "chunk_id": li.get_attribute("data-chunk-id"),
            "score": float(li.query_selector(".score").inner_text()),
            "entity": li.query_selector(".entity").inner_text(),
            "marks": [m.inner_text().lower() for m in li.query_selector_all("mark")],
        }
        for li in page.query_selector_all("#results li.hit")
    ]
    with httpx.Client(base_url=site, headers={"X-API-Key": READ_KEY}) as c:
        api = c.post(
            "/v1/collections/page_docs/search/hybrid", json={"text": question, "k": 4}
        ).json()["results"]
    assert [s["chunk_id"] for s in shown] == [h["chunk_id"] for h in api]
    assert [s["score"] for s in shown] == [round(h["score"], 3) for h in api]
    assert all(s["entity"].startswith("docs/") for s in shown)
    marked = {m for s in shown for m in s["marks"]}
    assert marked & {"filter", "filters", "metadata"}, marked
    assert "results (hybrid" in page.inner_text("#status") or "result (hybrid" in page.inner_text(
        "#status"
    )
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000

    page.check("input[name=kind][value=text]")
    page.fill("#query", "connection pool")
    page.click("#go")
    page.wait_for_selector("#status:has-text('(text')")
    assert page.query_selector_all("#results li.hit")

    page.click("#more summary")
    page.fill("#filter", '{"page": {"$in": ["pipeline"]}')  # not JSON: a brace is missing
    page.click("#go")
    page.wait_for_selector("#status:has-text('not JSON')")
    page.fill("#filter", '{"page": {"$near": 1}}')
    page.click("#go")
    page.wait_for_selector("#status:has-text('bad_filter')")
    assert page.query_selector_all("#results li.hit") == []
    page.fill("#filter", '{"page": "pipeline"}')
    page.click("#go")
    page.wait_for_selector("#status:has-text('(text')")
    entities = {e.inner_text() for e in page.query_selector_all("#results .entity")}
    assert entities == {"docs/pipeline.md"}
    assert problems == []
    page.close()


def test_chunk_content_is_shown_as_text_never_as_markup(site: str, browser: object) -> None:
    with httpx.Client(base_url=site, headers={"X-API-Key": WRITE_KEY}) as c:
        hostile = "<img src=x onerror=\"document.title='owned'\"> zebra <b>bold</b>"
        r = c.post(
            "/v1/collections/page_docs/chunks",
            json={"chunks": [{"chunk_id": "hostile", "content": hostile}]},
        )
        assert r.status_code == 200, r.text
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(site + "/")
    page.evaluate(f"sessionStorage.setItem('rag-pgstore-key', '{READ_KEY}')")
    page.reload()
    page.wait_for_selector("#collection option[value=page_docs]", state="attached")
    page.check("input[name=kind][value=text]")
    page.fill("#query", "zebra")
    page.click("#go")
    page.wait_for_selector("#results li[data-chunk-id=hostile]")
    content = page.inner_text("#results li[data-chunk-id=hostile] .content")
    assert "<img src=x" in content and "<b>bold</b>" in content
    assert page.query_selector("#results img") is None
    assert page.title() != "owned"
    page.close()
