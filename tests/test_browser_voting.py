"""The voting page and the leaderboard in headless Chromium (Debian's, driven by Playwright),
against a real ``doohable serve`` process, at desktop and phone sizes. Screenshots are saved
under artifacts/screenshots/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from doohable.store.blobs import open_blobs
from doohable.store.db import dispose_all, get_engine, session_scope
from doohable.store.models import PairToken, Vote
from doohable.store.users import add_user
from server_support import start_server, stop_server
from voting_support import add_images

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium at /usr/bin/chromium")
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, object]]:
    home = tmp_path / "home"
    env = {
        "DOOHABLE_HOME": str(home),
        "DOOHABLE_DATABASE_URL": f"sqlite:///{home / 'doohable.db'}",
        "DOOHABLE_BLOB_URL": f"file://{home / 'blobs'}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    engine = get_engine(env["DOOHABLE_DATABASE_URL"])
    with session_scope(engine) as s:
        add_images(s, 8, blobs=open_blobs(env["DOOHABLE_BLOB_URL"]))
        token = add_user(s, "dana")[1]
    proc, url = start_server(tmp_path / "server.log", env)
    try:
        yield url, token, engine
    finally:
        stop_server(proc)
        dispose_all()


def current_token(page) -> str:  # type: ignore[no-untyped-def]
    return str(page.get_attribute("#pair", "data-token") or "")


def act(page, do) -> None:  # type: ignore[no-untyped-def]
    """Do one action and wait until a new pair is on screen and the server has answered."""
    page.evaluate("() => window.doohableReady()")  # a new pair takes a vote after a short look
    before = current_token(page)
    do()
    page.wait_for_function("t => document.getElementById('pair').dataset.token !== t", arg=before)
    page.evaluate("() => window.doohableIdle()")


def images_loaded(page) -> bool:  # type: ignore[no-untyped-def]
    return bool(page.evaluate(
        "() => [...document.querySelectorAll('.choice img')].every(i => i.complete && i.naturalWidth > 0)"
    ))


@pytest.mark.parametrize("size", list(SIZES))
def test_vote_undo_skip_and_leaderboard(browser, server, size: str) -> None:  # type: ignore[no-untyped-def]
    url, token, engine = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # sign in: the form for the phone, the token link for the desktop
    if size == "phone":
        page.goto(f"{url}/vote")
        assert "/login" in page.url
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert page.locator(".error").is_visible()
        page.fill("#token", token)
        page.click("button[type=submit]")
    else:
        page.goto(f"{url}/login?token={token}")
    page.wait_for_url(f"{url}/vote")
    page.wait_for_function("() => document.getElementById('pair').dataset.token")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.choice img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    left_box, right_box = page.locator("#left").bounding_box(), page.locator("#right").bounding_box()
    if size == "phone":  # stacked
        assert right_box["y"] >= left_box["y"] + left_box["height"] - 1
    else:  # side by side
        assert right_box["x"] >= left_box["x"] + left_box["width"] - 1
        assert abs(right_box["y"] - left_box["y"]) < 2
    page.screenshot(path=str(SHOTS / f"vote-{size}.png"))

    # 10 votes: 5 by click or tap, 5 by the arrow keys
    chosen: list[int] = []
    for k in range(10):
        side = "left" if k % 2 == 0 else "right"
        chosen.append(int(page.get_attribute(f"#{side}", "data-image-id") or 0))
        if k < 5:
            act(page, lambda side=side: page.click(f"#{side}"))
        else:
            act(page, lambda side=side: page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight"))
        assert images_loaded(page)
    page.wait_for_function("() => document.getElementById('today').textContent === '10'")

    # undo the last vote (u), skip one pair (s), can't decide on one (↓)
    page.evaluate("() => window.doohableReady()")
    page.keyboard.press("u")
    page.evaluate("() => window.doohableIdle()")
    page.wait_for_function("() => document.getElementById('today').textContent === '9'")
    skipped = current_token(page)
    act(page, lambda: page.keyboard.press("s"))
    act(page, lambda: page.keyboard.press("ArrowDown"))
    page.wait_for_function("() => document.getElementById('today').textContent === '10'")
    page.screenshot(path=str(SHOTS / f"vote-{size}-after.png"))

    with session_scope(engine) as s:
        rows = s.scalars(select(Vote).order_by(Vote.id)).all()
        skipped_row = s.get(PairToken, skipped)
        assert skipped_row is not None and skipped_row.used_at is not None
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.pair_token == skipped)) == 0
    votes = [v for v in rows if v.undoes_vote_id is None]
    undos = [v for v in rows if v.undoes_vote_id is not None]
    assert len(votes) == 11 and len(undos) == 1 and undos[0].undoes_vote_id == votes[9].id
    assert [v.winner_id for v in votes[:10]] == chosen  # each vote for the image clicked / keyed
    assert votes[10].winner_id is None  # can't decide

    # the leaderboard reflects the votes: every voted image, Elo votes summing to 2 x 10
    page.goto(f"{url}/leaderboard")
    rows_el = page.locator("#board tbody tr")
    voted = {i for v in votes[:9] + votes[10:] for i in (v.left_id, v.right_id)}
    assert rows_el.count() == len(voted)
    ids = {int(rows_el.nth(k).get_attribute("data-image-id") or 0) for k in range(rows_el.count())}
    assert ids == voted
    elo_votes = sum(int(rows_el.nth(k).locator(".elo-votes").inner_text()) for k in range(rows_el.count()))
    assert elo_votes == 2 * 10
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SHOTS / f"leaderboard-{size}.png"), full_page=True)
    assert not errors, errors
    context.close()
