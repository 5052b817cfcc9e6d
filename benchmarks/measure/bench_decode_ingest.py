"""Decoding and ingest speed.

1. JPEG draft decoding for scoring: a 12 MP phone-size JPEG decoded to a 224×224 input,
   full decode + resize (baseline) vs ``doohable.images.decode(draft=(224, 224))`` + resize.
2. Ingest throughput on SQLite + local files: images per second for ``ingest_inputs`` on a
   folder of distinct photos, against the baseline of only reading + decoding them.

Run:  .venv/bin/python benchmarks/measure/bench_decode_ingest.py [--repeat 5] [--images 60]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skd


def _timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def phone_jpeg() -> bytes:
    """A 4032×3024 JPEG (12 MP, quality 90) made from a sample photo with fine texture added."""
    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray(skd.astronaut()).resize((4032, 3024), Image.Resampling.BICUBIC))
    noisy = np.clip(big.astype(np.int16) + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bench_draft(repeat: int) -> None:
    from doohable.images import decode

    data = phone_jpeg()
    size = (224, 224)

    def full() -> None:
        decode(data).image.resize(size, Image.Resampling.BILINEAR)

    def draft() -> None:
        decode(data, draft=size).image.resize(size, Image.Resampling.BILINEAR)

    t_full, t_draft = _timeit(full, repeat), _timeit(draft, repeat)
    print(f"JPEG 4032x3024 ({len(data) / 1e6:.1f} MB) -> 224x224, median of {repeat}:")
    print(f"  baseline full decode + resize : {t_full * 1000:7.1f} ms")
    print(f"  draft decode + resize         : {t_draft * 1000:7.1f} ms   ({t_full / t_draft:.1f}x faster)")


def distinct_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct JPEG/PNG files: crops of several sample photos at different offsets."""
    sources = [skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket(), skd.hubble_deep_field()]
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        y, x = (i * 7) % (src.shape[0] - 256), (i * 13) % (src.shape[1] - 256)
        crop = np.ascontiguousarray(src[y : y + 256, x : x + 256][:, :: 1 if i % 2 else -1])
        p = folder / f"{i:04d}.{'jpg' if i % 3 else 'png'}"
        Image.fromarray(crop).save(p)
        paths.append(p)
    return paths


def bench_ingest(n: int) -> None:
    from doohable.config import Settings
    from doohable.images import decode, read_limited
    from doohable.ingest import ingest_inputs
    from doohable.store.db import dispose_all

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = distinct_photos(folder, n)
        t = time.perf_counter()
        for p in paths:
            decode(read_limited(p))
        t_decode = time.perf_counter() - t

        settings = Settings(home=Path(tmp) / "home")
        t = time.perf_counter()
        first = ingest_inputs([str(folder)], settings)
        t_ingest = time.perf_counter() - t
        t = time.perf_counter()
        again = ingest_inputs([str(folder)], settings)
        t_again = time.perf_counter() - t
        dispose_all()
    print(f"ingest of {n} distinct 256x256 photos (SQLite + local files):")
    print(f"  baseline read + decode only   : {n / t_decode:7.1f} images/s")
    print(
        f"  ingest (new)                  : {n / t_ingest:7.1f} images/s"
        f"  (added {first.added}, near-duplicates {first.near_duplicates})"
    )
    print(f"  ingest again (all duplicates) : {n / t_again:7.1f} images/s  (duplicates {again.duplicates})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=int, default=60)
    args = ap.parse_args()
    bench_draft(args.repeat)
    bench_ingest(args.images)


if __name__ == "__main__":
    main()
