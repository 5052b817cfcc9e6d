"""The moderation page in headless Chromium: order, keyboard decisions, slider preview, saving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from doohable import moderation
from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.ingest import SourceInfo, ingest_bytes
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image
from doohable.store.users import add_user
from scoring_fixtures import brightness_model, expected_score, jpeg_of_gray
from server_support import serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LEVELS = [60, 200, 120, 240]


@pytest.fixture
def app_url(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Settings]]:
    model = brightness_model(tmp_path / "b.onnx")
    monkeypatch.setenv("DOOHABLE_MODEL", str(model))
    get_settings.cache_clear()
    s = get_settings()
    with serve_in_thread(create_app(s)) as url:
        yield url, s


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_moderator_works_the_queue_with_keys_and_slider(app_url: tuple[str, Settings]) -> None:
    from playwright.sync_api import sync_playwright

    url, settings = app_url
    engine = get_engine(settings.resolved_database_url)
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(engine) as s:
        _, token = add_user(s, "mia", "moderator")
        ids = [
            ingest_bytes(s, blobs, jpeg_of_gray(lv, (80 + lv, 60)), source=src, settings=settings).image_id
            for lv in LEVELS
            for src in [SourceInfo("file", f"{lv}.jpg")]
        ]  # fmt: skip
        scores = {i: expected_score(lv) for i, lv in zip(ids, LEVELS, strict=True)}
        moderation.store_scores(s, scores, "brightness", "v")
    best_first = sorted(ids, key=lambda i: -scores[i])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.goto(f"{url}/login?token={token}&next=/moderation")
        page.wait_for_selector("article.item")
        page.wait_for_function("document.getElementById('thr-saved').textContent !== '–'")  # policy loaded
        shown = [
            int(x)
            for x in page.locator("article.item").evaluate_all("els => els.map(e => e.dataset.imageId)")
        ]
        assert shown == best_first
        page.keyboard.press("a")  # approve the best
        page.wait_for_function("document.querySelectorAll('article.item').length === 3")
        page.keyboard.press("j")
        page.keyboard.press("r")  # reject the third best
        page.wait_for_function("document.querySelectorAll('article.item').length === 2")
        page.locator("article.item .reject").first.click()  # reject the second best with the button
        page.wait_for_function("document.querySelectorAll('article.item').length === 1")
        # slider: preview at the score of the one left, then save
        thr = expected_score(LEVELS[0]) - 1e-4  # just below its score (the model computes in float32)
        page.evaluate(
            "t => { const s = document.getElementById('thr'); s.min = 0; s.value = t;"
            " s.dispatchEvent(new Event('input')); }",
            thr,
        )
        page.wait_for_function(f"document.getElementById('preview').textContent.includes('At {thr:.2f}:')")
        text = page.locator("#preview").text_content() or ""
        assert "1 pending image would be auto-approved" in text
        assert "2 rejected ones would have been approved" in text
        page.locator("#thr-save").click()
        page.wait_for_function(
            "document.getElementById('toast-text').textContent.includes('Threshold saved')"
        )
        browser.close()
    with session_scope(engine) as s:
        log = [(d.image_id, d.decision) for d in s.query(Decision).order_by(Decision.id) if d.actor_id]
        status = {i: s.get(Image, i).status for i in ids}  # type: ignore[union-attr]
        policy = moderation.get_policy(s, settings)
    assert log == [(best_first[0], "approved"), (best_first[2], "rejected"), (best_first[1], "rejected")]
    assert status[best_first[3]] == "pending"  # never checked by the NSFW gate: not auto-approved
    assert policy.threshold is not None and abs(policy.threshold - thr) < 0.01
