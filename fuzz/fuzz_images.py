"""Atheris harness for ``doohable.images.decode``, the one decoder every entry point uses.

Any bytes must either decode to an RGB image within the limits or raise ``ImageError``;
any other exception (or a hang, or running out of memory) is a crash.

    .venv/bin/python fuzz/fuzz_images.py -runs=5000            # short run (CI)
    .venv/bin/python fuzz/fuzz_images.py -max_total_time=3600  # long run (benchmarks/measure/fuzz_long.py)

With no corpus folder on the command line, a seed corpus (a small valid file of every
accepted format) is written to a temporary folder and used, so the fuzzer starts inside
each format's parser.
"""

from __future__ import annotations

import io
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from PIL import Image

    from doohable import images

MAX_PIXELS = 4_000_000  # small limits: a fuzz input never needs more, and memory stays low
MAX_SIDE = 4096
MAX_BYTES = 1 << 20


def seeds() -> dict[str, bytes]:
    """A tiny valid file of each accepted format (and a few variants)."""
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out: dict[str, bytes] = {}
    for name, im, fmt, kw in [
        ("a.jpg", rgb, "JPEG", {}),
        ("a-progressive.jpg", rgb, "JPEG", {"progressive": True}),
        ("a-cmyk.jpg", rgb.convert("CMYK"), "JPEG", {}),
        ("a.png", rgb, "PNG", {}),
        ("a-rgba.png", rgb.convert("RGBA"), "PNG", {}),
        ("a-16.png", Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257), "PNG", {}),
        ("a.gif", rgb.convert("P"), "GIF", {}),
        ("a.webp", rgb, "WEBP", {}),
        ("a-lossless.webp", rgb, "WEBP", {"lossless": True}),
        ("a.bmp", rgb, "BMP", {}),
        ("a.tiff", rgb, "TIFF", {}),
        ("a.heic", rgb, "HEIF", {}),
    ]:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", exif=exif.tobytes())
    out["a-exif.jpg"] = buf.getvalue()
    return out


def test_one_input(data: bytes) -> None:
    """One fuzz input: the first byte picks draft decoding, the rest is the file."""
    draft = (8, 8) if data[:1] and data[0] & 1 else None
    try:
        d = images.decode(
            data[1:], max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, max_side=MAX_SIDE, draft=draft
        )
    except images.ImageError as e:
        if not str(e).strip():
            raise AssertionError("ImageError without a reason") from e
        return
    if d.image.mode != "RGB":
        raise AssertionError(f"decode returned mode {d.image.mode}")
    if not (0 < d.width * d.height <= MAX_PIXELS and max(d.width, d.height) <= MAX_SIDE):
        raise AssertionError(f"decode accepted {d.width}×{d.height}, outside the limits")


def main() -> None:
    warnings.simplefilter("ignore")  # Pillow warns on odd metadata; only exceptions matter
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        folder = Path(tempfile.mkdtemp(prefix="doohable-fuzz-images-"))
        for name, data in seeds().items():
            (folder / name).write_bytes(b"\0" + data)
        argv.append(str(folder))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
