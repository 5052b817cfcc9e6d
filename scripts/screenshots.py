"""Screenshots of the moderation page, the image viewer and the voting page at desktop
(1366×900) and phone (390×844) sizes, into docs/screenshots/ as small palette PNGs.

A throwaway SQLite site with synthetic images (no data set is copied), the bundled scorer's
name for the stored scores, Debian's Chromium through Playwright:

    PYTHONPATH=src .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # server_support: the app on uvicorn in a thread
SIZES = {"desktop": (1366, 900), "phone": (390, 844)}
CHROMIUM = "/usr/bin/chromium"


def synthetic_photo(seed: int) -> bytes:
    """A colourful, distinct JPEG: a sky gradient, a sun and a few hills."""
    rng = random.Random(seed)
    w, h = rng.choice([(800, 600), (600, 800), (900, 600), (700, 700)])
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    top, bottom = [rng.randrange(40, 255) for _ in range(3)], [rng.randrange(0, 200) for _ in range(3)]
    for y in range(h):
        t = y / h
        draw.line(
            [(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    cx, cy, r = rng.randrange(w), rng.randrange(h // 2), rng.randrange(30, 90)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 220, 120))
    for k in range(3):
        base = h - rng.randrange(50, h // 2)
        draw.polygon([(0, h), (rng.randrange(w), base - 60 * k), (w, h)], fill=(20 + 30 * k, 90 + 20 * k, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build_site(home: Path) -> dict[str, str]:
    """A database with 12 scored images, a moderator and a voter; returns their tokens."""
    os.environ.update(
        DOOHABLE_HOME=str(home),
        DOOHABLE_DATABASE_URL=f"sqlite:///{home / 'doohable.db'}",
        DOOHABLE_BLOB_URL=f"file://{home / 'blobs'}",
    )
    from doohable import moderation
    from doohable.batch import cached_scorer
    from doohable.config import get_settings
    from doohable.ingest import SourceInfo, ingest_bytes
    from doohable.store.blobs import open_blobs
    from doohable.store.db import get_engine, session_scope
    from doohable.store.users import add_user

    settings = get_settings()
    name = cached_scorer(settings.model, settings.threads).name
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        tokens = {"mod": add_user(s, "mia", "moderator")[1], "voter": add_user(s, "dana")[1]}
        scores = {}
        for k in range(12):
            src = SourceInfo(
                "url",
                f"https://example.org/p/{k}.jpg",
                network=["instagram", "upload"][k % 2],
                author=f"@photographer{k}",
                caption=f"Evening hills, shot {k}",
                posted_at=dt.datetime(2026, 11, 1 + k, 18, tzinfo=dt.UTC),
            )
            image_id = ingest_bytes(s, blobs, synthetic_photo(k), source=src, settings=settings).image_id
            scores[image_id] = 2.0 + 2.5 * ((k * 7) % 12) / 11
        moderation.store_scores(s, scores, name, "screenshots")
        moderation.set_policy(s, threshold=round(sorted(scores.values())[-3], 5))
    return tokens


def save_small(page: object, path: Path) -> None:
    """A viewport screenshot quantised to 128 colours (a few tens of KB)."""
    png = page.screenshot()  # type: ignore[attr-defined]
    Image.open(io.BytesIO(png)).convert("RGB").quantize(128).save(path, optimize=True)


def shoot(url: str, tokens: dict[str, str], out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for size, (w, h) in SIZES.items():
            ctx = browser.new_context(viewport={"width": w, "height": h})
            page = ctx.new_page()
            page.goto(f"{url}/login?token={tokens['mod']}&next=/moderation")
            page.wait_for_selector("article.item img")
            page.wait_for_function(
                "[...document.querySelectorAll('article.item img')].slice(0, 4).every(i => i.complete)"
            )
            page.keyboard.press("j")
            page.keyboard.press("r")
            page.wait_for_function("!document.getElementById('toast').hidden")
            for shot in (f"moderation-{size}.png", f"viewer-{size}.png"):
                if shot.startswith("viewer"):
                    page.keyboard.press("v")
                    page.wait_for_function("document.getElementById('viewer-img').complete")
                save_small(page, out / shot)
                written.append(out / shot)
            ctx.close()
            ctx = browser.new_context(viewport={"width": w, "height": h})
            page = ctx.new_page()
            page.goto(f"{url}/login?token={tokens['voter']}&next=/vote")
            page.wait_for_function("document.getElementById('pair').dataset.token")
            page.wait_for_function("[...document.querySelectorAll('.choice img')].every(i => i.complete)")
            page.evaluate("() => window.doohableReady()")
            page.keyboard.press("ArrowLeft")
            page.evaluate("() => window.doohableIdle()")
            page.wait_for_function("[...document.querySelectorAll('.choice img')].every(i => i.complete)")
            save_small(page, out / f"vote-{size}.png")
            written.append(out / f"vote-{size}.png")
            ctx.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = build_site(Path(tmp))
        from doohable.api.app import create_app
        from server_support import serve_in_thread

        with serve_in_thread(create_app()) as url:
            for path in shoot(url, tokens, args.out):
                print(f"{path}: {path.stat().st_size // 1024} KB")

if __name__ == "__main__":
    main()
