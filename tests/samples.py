"""Real image files made by the tests: good photos in every accepted format and hostile files.

Photos come from scikit-image's bundled samples (public domain / free licences), so nothing
is downloaded and nothing from ../shared/data is copied."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image
from skimage import data as skd

pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class Good:
    """A good sample: the format and the oriented size decoding must report."""

    format: str
    width: int
    height: int


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, bit_depth: int = 1, idat: bytes | None = None) -> bytes:
    """A greyscale PNG of any size, made without allocating its pixels: rows of zeros are
    compressed one at a time (a 20000×20000 1-bit bomb is a few tens of KB)."""
    row = b"\0" * (1 + (width * bit_depth + 7) // 8)
    if idat is None:
        comp = zlib.compressobj(9)
        idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def rotated_jpeg(orientation: int = 6) -> bytes:
    """coins (384 wide × 303 high as stored) with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(skd.coins()), "JPEG", exif=exif.tobytes(), quality=92)


def sixteen_bit_png() -> tuple[bytes, np.ndarray]:
    """moon as a 16-bit greyscale PNG (v * 257) and the 8-bit array it must decode back to."""
    moon = skd.moon()
    return encode(Image.fromarray(moon.astype(np.uint16) * 257), "PNG"), moon


def animated_gif() -> bytes:
    """Two very different frames; only the first may be used."""
    first = Image.fromarray(skd.immunohistochemistry())
    second = Image.fromarray(255 - skd.immunohistochemistry())
    return encode(first, "GIF", save_all=True, append_images=[second], duration=200, loop=0)


def palette_png_with_transparency() -> bytes:
    """colorwheel quantised to a palette, its black background marked transparent (tRNS)."""
    im = Image.fromarray(skd.colorwheel()).quantize(64)
    palette = np.asarray(im.getpalette()[: 64 * 3]).reshape(-1, 3)
    darkest = int(palette.sum(axis=1).argmin())
    return encode(im, "PNG", transparency=darkest)


def good_photos() -> dict[str, tuple[bytes, Good]]:
    """Twelve distinct good photos, one per format and pixel layout the issue names."""
    hubble = Image.fromarray(skd.hubble_deep_field()).resize((500, 436))
    retina = Image.fromarray(skd.retina()).resize((400, 400)).convert("CMYK")
    return {
        "astronaut.jpg": (encode(Image.fromarray(skd.astronaut()), "JPEG"), Good("JPEG", 512, 512)),
        "chelsea.png": (encode(Image.fromarray(skd.chelsea()), "PNG"), Good("PNG", 451, 300)),
        "coffee.webp": (encode(Image.fromarray(skd.coffee()), "WEBP"), Good("WEBP", 600, 400)),
        "rocket.bmp": (encode(Image.fromarray(skd.rocket()), "BMP"), Good("BMP", 640, 427)),
        "hubble.tiff": (encode(hubble, "TIFF"), Good("TIFF", 500, 436)),
        "camera.heic": (encode(Image.fromarray(skd.camera()).convert("RGB"), "HEIF"), Good("HEIF", 512, 512)),
        "retina-cmyk.jpg": (encode(retina, "JPEG"), Good("JPEG", 400, 400)),
        "moon-16bit.png": (sixteen_bit_png()[0], Good("PNG", 512, 512)),
        "animated.gif": (animated_gif(), Good("GIF", 512, 512)),
        "coins-rotated.jpg": (rotated_jpeg(6), Good("JPEG", 303, 384)),
        "logo-alpha.png": (encode(Image.fromarray(skd.logo()), "PNG"), Good("PNG", 500, 500)),
        "colorwheel-palette.png": (palette_png_with_transparency(), Good("PNG", 371, 370)),
    }


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'
HTML = b"<!DOCTYPE html>\n<html><body><img src='x.jpg'></body></html>\n"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def hostile_files(byte_limit: int) -> dict[str, tuple[bytes, str]]:
    """Ten files that must be refused, with a piece of the reason each must give.

    ``byte_limit`` is the max-bytes setting in force; one file is just above it."""
    jpeg = encode(Image.fromarray(skd.astronaut()), "JPEG")
    png = encode(Image.fromarray(skd.chelsea()), "PNG")
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG data"),
        "empty.jpg": (b"", "empty file"),
        "notes.jpg": (b"these are my holiday notes, not a photo\n" * 20, "plain text"),
        "bomb.png": (png_header_only(20000, 20000), "image is 20000×20000 = 400 MP, above the 50 MP limit"),
        "drawing.svg": (SVG, "SVG"),
        "page.jpg": (HTML, "HTML"),
        "corrupt.png": (png[:100] + bytes(range(256)) * 8 + png[-12:], "corrupt PNG data"),
        "too-tall.png": (png_header_only(1, 25000), "longest side is above the 20000 px limit"),
        "report.png": (PDF, "PDF"),
        "huge.jpg": (jpeg[:4] + os.urandom(byte_limit + 1000), "above the"),
    }


def write_all(folder: Path, files: dict[str, tuple[bytes, object]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
