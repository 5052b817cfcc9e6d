"""The pages people use every day, in Debian's headless Chromium at desktop and phone sizes:
one decision per image however fast keys come, undo with a confirmation on screen, the exact
threshold, the viewer, the help overlay, a double click on a vote image, role navigation,
HTML error pages and the favicon."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doohable import moderation
from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.ingest import SourceInfo, ingest_bytes
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image, Vote
from doohable.store.users import add_user
from scoring_fixtures import brightness_model, expected_score, jpeg_of_gray
from server_support import serve_in_thread
from voting_support import add_images

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SIZES = {"desktop": (1366, 900), "phone": (390, 844)}
LEVELS = [60, 200, 120, 240, 90]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def site(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A served app with 5 scored images (one with full metadata), a moderator and a voter."""
    monkeypatch.setenv("DOOHABLE_MODEL", str(brightness_model(tmp_path / "b.onnx")))
    get_settings.cache_clear()
    s = get_settings()
    engine = get_engine(s.resolved_database_url)
    blobs = open_blobs(s.resolved_blob_url)
    with session_scope(engine) as db:
        mod_token = add_user(db, "mia", "moderator")[1]
        voter_token = add_user(db, "dana")[1]
        ids = []
        for lv in LEVELS:
            src = SourceInfo(
                "url",
                f"https://example.org/{lv}.jpg",
                network="instagram",
                author=f"@cam{lv}",
                posted_at=dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC),
            )
            ids.append(
                ingest_bytes(db, blobs, jpeg_of_gray(lv, (80 + lv, 60)), source=src, settings=s).image_id
            )
        scores = {i: expected_score(lv) for i, lv in zip(ids, LEVELS, strict=True)}
        moderation.store_scores(db, scores, "brightness", "v")
        # distinct images to vote on (the grays are near-duplicates of each other)
        add_images(db, 4, blobs=blobs, start=100)
    with serve_in_thread(create_app(s)) as url:
        yield {
            "url": url,
            "engine": engine,
            "mod": mod_token,
            "voter": voter_token,
            "best_first": sorted(ids, key=lambda i: -scores[i]),
            "scores": scores,
        }


def open_page(
    browser: Any, site: dict[str, Any], size: str, token: str, path: str
) -> tuple[Any, Any, list[str]]:
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site['url']}/login?token={token}&next={path}")
    return context, page, errors


def in_viewport(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    vp = page.viewport_size
    return (
        bool(box)
        and box["y"] >= 0
        and box["y"] + box["height"] <= vp["height"]
        and box["x"] >= 0
        and box["x"] + box["width"] <= vp["width"]
    )


def human_rows(engine: Any) -> list[tuple[int, str, str | None]]:
    with session_scope(engine) as s:
        return [
            (d.image_id, d.decision, d.rule) for d in s.query(Decision).order_by(Decision.id) if d.actor_id
        ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("size", list(SIZES))
def test_two_quick_r_presses_decide_one_image_and_undo_brings_it_back(
    browser: Any, site: dict[str, Any], size: str
) -> None:
    context, page, errors = open_page(browser, site, size, site["mod"], "/moderation")
    page.wait_for_selector("article.item")
    page.wait_for_function("document.getElementById('thr-saved').textContent !== '–'")
    first, second = site["best_first"][:2]
    page.keyboard.press("r")
    page.wait_for_timeout(20)
    page.keyboard.press("r")
    page.wait_for_function("document.getElementById('toast-action').hidden === false")  # decided
    page.wait_for_timeout(300)  # any second POST would have landed by now
    assert human_rows(site["engine"]) == [(first, "rejected", None)]
    card = page.locator(f"article.item[data-image-id='{second}']")
    assert card.is_visible()
    with session_scope(site["engine"]) as s:
        assert s.get(Image, second).status == "pending"  # type: ignore[union-attr]
    assert page.locator("#count").inner_text() == "8 pending images"
    # the confirmation stays on screen (fixed), with its undo button, at both sizes
    assert in_viewport(page, "#toast") and in_viewport(page, "#toast-action")
    page.locator("#toast-action").click()
    page.wait_for_function("document.getElementById('toast-text').textContent.startsWith('Undone')")
    assert page.locator(f"article.item[data-image-id='{first}']").is_visible()
    assert page.locator("#count").inner_text() == "9 pending images"
    assert human_rows(site["engine"])[-1][1:] == ("pending", human_rows(site["engine"])[-1][2])
    with session_scope(site["engine"]) as s:
        assert s.get(Image, first).status == "pending"  # type: ignore[union-attr]
    # approve and reject are distinct and tall enough to tap
    approve = page.locator("article.item .approve").first.bounding_box()
    reject = page.locator("article.item .reject").first.bounding_box()
    assert approve["height"] >= 44 and reject["height"] >= 44
    colours = page.evaluate("""() => ['.approve', '.reject'].map(s =>
        getComputedStyle(document.querySelector('article.item ' + s)).backgroundColor)""")
    assert colours[0] != colours[1]
    # the whole image in the card: contained, not cropped
    fit = page.evaluate("getComputedStyle(document.querySelector('article.item img')).objectFit")
    assert fit == "contain"
    assert not errors, errors
    context.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_threshold_exact_shortcuts_after_slider_viewer_and_help(browser: Any, site: dict[str, Any]) -> None:
    exact = round(site["scores"][site["best_first"][2]], 5) + 1e-5  # between two scores, 5 decimals
    httpx.put(
        f"{site['url']}/api/v1/moderation/policy",
        json={"threshold": exact, "apply": False},
        headers={"Authorization": f"Bearer {site['mod']}"},
    ).raise_for_status()
    context, page, errors = open_page(browser, site, "desktop", site["mod"], "/moderation")
    page.wait_for_selector("article.item")
    page.wait_for_function("document.getElementById('thr-saved').textContent !== '–'")
    assert page.locator("#thr-saved").inner_text() == str(exact)
    assert page.locator("article.item.above").count() == 2  # the two best are above the draft
    # Save without moving the slider stores exactly the same value
    page.locator("#thr-save").click()
    page.wait_for_function("document.getElementById('toast-text').textContent.startsWith('Threshold saved')")
    with session_scope(site["engine"]) as s:
        assert moderation.get_setting(s, moderation.THRESHOLD_KEY) == exact
    # a click on the slider moves the draft only; the keys still work afterwards
    page.locator("#thr").click()
    assert page.locator("#thr-draft").inner_text() != page.locator("#thr-saved").inner_text()
    assert page.locator("#thr-saved").inner_text() == str(exact)
    page.keyboard.press("j")
    page.wait_for_timeout(50)
    page.keyboard.press("a")
    page.wait_for_function("/^Image \\d+ approved/.test(document.getElementById('toast-text').textContent)")
    assert [r[1] for r in human_rows(site["engine"])] == ["approved"]
    # the suggestion is refreshed after the decision (no reload): one approved so far
    page.wait_for_function("document.getElementById('suggestion').textContent.includes('have 1 approved')")
    # turning auto-approval off says so next to the preview
    page.locator("#thr-off").click()
    page.wait_for_function("document.getElementById('thr-saved').textContent === 'off'")
    page.wait_for_function(
        "document.getElementById('preview').textContent.startsWith('Auto-approval is off')"
    )
    # the viewer: full size with its metadata, zoom, Esc closes
    page.locator("article.item .open").first.click()
    assert page.locator("#viewer").is_visible()
    facts = page.locator("#viewer-facts").inner_text()
    for text in ("instagram", "@cam", "×60 px", " B", "Score", "Posted", "2026"):
        assert text in facts, facts
    page.keyboard.press("z")
    assert "zoomed" in (page.locator("#viewer-img").get_attribute("class") or "")
    page.keyboard.press("Escape")
    assert not page.locator("#viewer").is_visible()
    page.keyboard.press("?")
    assert (
        page.locator("#help").is_visible()
        and "reject the selected image" in page.locator("#help").inner_text()
    )
    page.keyboard.press("Escape")
    assert not errors, errors
    context.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("size", list(SIZES))
def test_double_click_on_a_vote_image_is_one_vote(browser: Any, site: dict[str, Any], size: str) -> None:
    context, page, errors = open_page(browser, site, size, site["voter"], "/vote")
    page.wait_for_function("() => document.getElementById('pair').dataset.token")
    page.evaluate("() => window.doohableReady()")
    first = page.get_attribute("#pair", "data-token")
    page.locator("#left").dblclick()
    page.evaluate("() => window.doohableIdle()")
    page.wait_for_timeout(300)
    with session_scope(site["engine"]) as s:
        votes = s.query(Vote).all()
    assert len(votes) == 1 and votes[0].pair_token == first
    # quick key presses: the first votes, the next one is refused with a message, not dropped silently
    page.evaluate("() => window.doohableReady()")
    voted_pair = (page.get_attribute("#left", "data-image-id"), page.get_attribute("#right", "data-image-id"))
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.evaluate("() => window.doohableIdle()")
    assert "choose again" in page.locator("#notice").inner_text()
    with session_scope(site["engine"]) as s:
        assert s.query(Vote).count() == 2
    # undo shows that pair again, to vote anew; progress moved with the votes
    page.keyboard.press("u")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('Vote undone')")
    assert (
        page.get_attribute("#left", "data-image-id"),
        page.get_attribute("#right", "data-image-id"),
    ) == voted_pair
    compared = page.locator("#compared").inner_text()
    assert int(compared.split(" of ")[1]) >= 4 and int(compared.split(" of ")[0]) >= 2
    # the nav: no Moderation link for a voter
    assert page.locator("nav a[href='/moderation']").count() == 0
    assert not errors, errors
    context.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_role_nav_error_pages_and_favicon(browser: Any, site: dict[str, Any]) -> None:
    context, page, _ = open_page(browser, site, "phone", site["voter"], "/vote")
    page.wait_for_url("**/vote")
    answer = page.goto(f"{site['url']}/moderation")
    assert answer.status == 403
    assert page.locator("h1").inner_text() == "Not for this account"
    page.locator("main a[href='/vote']").click()
    page.wait_for_url("**/vote")
    assert page.goto(f"{site['url']}/no/such/page").status == 404
    assert page.locator("main a").count() >= 1
    context.close()
    context, page, _ = open_page(browser, site, "desktop", site["mod"], "/leaderboard")
    page.wait_for_url("**/leaderboard")
    assert page.locator("nav a[href='/moderation']").count() == 1
    page.goto(f"{site['url']}/vote")
    assert page.locator("nav a[href='/moderation']").count() == 1
    context.close()
    fav = httpx.get(f"{site['url']}/favicon.ico")
    assert fav.status_code == 200 and fav.headers["content-type"] == "image/x-icon"
    api_404 = httpx.get(f"{site['url']}/api/v1/nope", headers={"Accept": "text/html"})
    assert api_404.status_code == 404 and api_404.json()["detail"]  # the API keeps JSON


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser: Any, site: dict[str, Any], path: str) -> None:
    """Swagger UI and ReDoc render with every request going to the server itself."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    done: list[str] = []
    failed: list[tuple[str, str]] = []
    page.on("requestfinished", lambda r: done.append(r.url))
    page.on("requestfailed", lambda r: failed.append((r.url, r.failure or "")))
    page.goto(f"{site['url']}{path}")
    if path == "/docs":
        page.wait_for_selector(".opblock-summary-path[data-path='/api/v1/score']")
        page.locator(".opblock-summary-path[data-path='/api/v1/score']").first.click()
        page.wait_for_selector(".opblock-body >> text=Request body")
        body = page.locator(".opblock.is-open").first.inner_text()
        assert "multipart/form-data" in body or "file" in body
        assert ":func:" not in page.content()
    else:
        page.wait_for_selector('text="/api/v1/score/batch"')
    page.wait_for_timeout(300)
    context.close()
    local = f"{site['url']}/"
    assert done and all(u.startswith((local, "data:", "blob:")) for u in done), done
    # ReDoc's footer logo points at its CDN: the page's Content-Security-Policy stops it in the browser
    assert all(u.startswith(local) or why == "csp" for u, why in failed), failed
