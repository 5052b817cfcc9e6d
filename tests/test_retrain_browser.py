"""The leaderboard's retrain button in headless Chromium: an admin starts a retrain on a small
collection, follows it and reads the result; other roles see no button."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user
from loop_support import vote_collection
from server_support import serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def app_url(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Settings]]:
    broken = tmp_path / "broken.onnx"  # the serving model cannot load: any better-than-chance model wins
    broken.write_bytes(b"not a model")
    monkeypatch.setenv("DOOHABLE_MODEL", str(broken))
    get_settings.cache_clear()
    s = get_settings()
    with serve_in_thread(create_app(s)) as url:
        yield url, s


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_admin_retrains_from_the_leaderboard(app_url: tuple[str, Settings], shared_data: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    url, settings = app_url
    ids = vote_collection(settings, shared_data)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        _, admin = add_user(s, "ada", "admin")
        _, moderator = add_user(s, "mo", "moderator")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.goto(f"{url}/login?token={moderator}&next=/leaderboard")
        page.wait_for_selector("#board")
        assert page.locator("#retrain-start").count() == 0
        page.context.clear_cookies()
        page.goto(f"{url}/login?token={admin}&next=/leaderboard")
        page.wait_for_function("document.getElementById('retrain-status').textContent === 'No retrain yet.'")
        page.locator("#retrain-start").click()
        page.wait_for_selector("#retrain-status[data-state='running']")
        assert page.locator("#retrain-start").is_disabled()
        page.wait_for_selector("#retrain-status[data-state='done']", timeout=300_000)
        text = page.locator("#retrain-status").text_content() or ""
        assert not page.locator("#retrain-start").is_disabled()
        browser.close()
    target = settings.home / "models" / "in-house.onnx"
    assert "Held-out pairwise accuracy on" in text and "current model unavailable" in text, text
    assert f"promoted to {target}, {len(ids)} images rescored" in text, text
    assert target.is_file()
