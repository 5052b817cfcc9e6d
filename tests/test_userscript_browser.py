"""The userscript in headless Chromium: buttons on a social-like page, click, image stored.

A local HTTP server serves the test page and its photo; the doohable app runs in uvicorn on
another port (so the userscript's request is cross-origin, as on Instagram). The script is the
one the app serves, injected before the page loads with a small GM_* shim."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image, Score, Source
from doohable.store.users import add_user
from scoring_fixtures import brightness_model, photo_jpeg
from server_support import serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>feed</title></head><body>
<article id="post">
  <header><a href="/alice">alice</a></header>
  <div><img id="photo" src="/photo.jpg" width="320" height="240" alt="a photo"></div>
  <div data-testid="tweetText">A sunny day on the wall</div>
</article>
<img id="icon" src="/icon.jpg" width="32" height="32">
<div id="later"></div>
<script>
  setTimeout(() => {
    const img = document.createElement("img");
    img.id = "late"; img.src = "/late.jpg"; img.width = 300; img.height = 200;
    document.getElementById("later").appendChild(img);
  }, 300);
</script>
</body></html>"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "feed.html").write_text(PAGE)
    (root / "photo.jpg").write_bytes(photo_jpeg(1, size=(640, 480)))
    (root / "late.jpg").write_bytes(photo_jpeg(2, size=(600, 400)))
    (root / "icon.jpg").write_bytes(photo_jpeg(3, size=(32, 32)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def server(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Settings]]:
    monkeypatch.setenv("DOOHABLE_URL_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("DOOHABLE_MODEL", str(brightness_model(tmp_path / "b.onnx")))
    get_settings.cache_clear()
    s = get_settings()
    with serve_in_thread(create_app(s)) as url:
        yield url, s


def _shim(token: str, with_gm_xhr: bool) -> str:
    store = f"const store = {{token: {token!r}}};"
    base = (
        store
        + "window.GM_getValue = (k, d) => (k in store ? store[k] : d);"
        + "window.GM_setValue = (k, v) => { store[k] = v; };"
    )
    if not with_gm_xhr:
        return base
    # a GM_xmlhttpRequest like the managers' (callback style), recording its calls
    return (
        base
        + """
    window.__gm_calls = [];
    window.GM_xmlhttpRequest = (o) => {
      window.__gm_calls.push(o.url);
      fetch(o.url, {method: o.method, headers: o.headers, body: o.data})
        .then(async (r) => o.onload({status: r.status, responseText: await r.text()}))
        .catch(() => o.onerror());
    };"""
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("with_gm_xhr", [False, True], ids=["fetch", "GM_xmlhttpRequest"])
def test_click_adds_the_image_with_its_context(
    browser: Any, site: str, server: tuple[str, Settings], with_gm_xhr: bool
) -> None:
    url, settings = server
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        _, token = add_user(s, "scout", "voter")
    script = httpx.get(url + "/userscript/doohable.user.js").text
    assert f'const SERVER = "{url}";' in script
    page = browser.new_page()
    page.add_init_script(_shim(token, with_gm_xhr))
    page.add_init_script(script)
    page.goto(site + "/feed.html")
    page.wait_for_selector("#photo + button.doohable-add")
    page.wait_for_selector("#late + button.doohable-add")  # added later: MutationObserver
    assert page.locator("#icon + button.doohable-add").count() == 0  # too small for a button
    button = page.locator("#photo + button.doohable-add")
    button.click()
    page.wait_for_selector("#photo + button[data-doohable-result]")
    assert button.get_attribute("data-doohable-result") == "ok", button.text_content()
    assert "Added to doohable" in (button.text_content() or "")
    button.click()  # the same image again: the server says it is a duplicate
    page.wait_for_function("document.querySelector('#photo + button').textContent.includes('Already')")
    if with_gm_xhr:
        assert page.evaluate("window.__gm_calls.length") == 2
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        images = s.query(Image).all()
        sources = s.query(Source).order_by(Source.id).all()
        scores = s.query(Score).all()
    assert len(images) == 1 and images[0].width == 640
    src = sources[0]
    assert (src.kind, src.uri, src.author, src.network) == (
        "userscript",
        site + "/photo.jpg",
        "alice",
        "127.0.0.1",
    )
    assert src.caption == "A sunny day on the wall" and src.page_url == site + "/feed.html"
    assert len(scores) == 1 and scores[0].model == "brightness"  # scored on arrival
    assert images[0].nsfw is not None  # the gate ran
    page.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_reason_is_shown(browser: Any, site: str, server: tuple[str, Settings]) -> None:
    url, _settings = server
    script = httpx.get(url + "/userscript/doohable.user.js").text
    page = browser.new_page()
    page.add_init_script(_shim("not-a-valid-token", with_gm_xhr=False))
    page.add_init_script(script)
    page.goto(site + "/feed.html")
    button = page.locator("#photo + button.doohable-add")
    button.click()
    page.wait_for_selector("#photo + button[data-doohable-result]")
    assert button.get_attribute("data-doohable-result") == "error"
    assert "missing or invalid token" in (button.text_content() or "")
    page.close()
