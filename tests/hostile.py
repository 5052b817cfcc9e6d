"""The hostile-file corpus: every case is made by code here (nothing binary is committed).

:func:`corpus` returns the cases the issue names (truncated and corrupt files of each format,
zero bytes, decompression bombs, enormous declared sizes, wrong extensions, polyglots, SVG
with script, HTML, PDF, CMYK and 16-bit, animations, corrupt or huge EXIF, 1×1 images, a file
just above the byte limit) together with good files that must be accepted. Each case says
whether it must be accepted and, when refused, words that its reason must contain.
:func:`huge_upload` makes the 100 MB upload separately (it is not kept in memory with the rest).

The good photos and a few hostile files come from :mod:`samples`; this module adds the rest.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skd

from samples import HTML, PDF, encode, good_photos, hostile_files, png_header_only


@dataclass(frozen=True)
class Case:
    """One file of the corpus.

    Attributes
    ----------
    name : file name (its extension may lie on purpose).
    data : the bytes.
    accept : True when every entry point must accept the file.
    reason : when refused, alternatives of which the (lower-cased) reason must contain one.
    """

    name: str
    data: bytes
    accept: bool
    reason: tuple[str, ...] = ()

    def reason_ok(self, message: str) -> bool:
        """True when ``message`` is a clear reason for refusing this case."""
        low = message.lower()
        return bool(message.strip()) and "traceback" not in low and any(r in low for r in self.reason)


SCRIPT_COMMENT = b"<script>alert(1)</script><?php system($_GET[1]); ?>"
_LIMIT = ("limit", "larger than")
_CORRUPT = ("truncated", "corrupt")
_NOT_IMAGE = ("not an image", "not a supported image", "corrupt", "truncated")


def _jpeg(seed: int = 0, size: tuple[int, int] = (96, 64), **kw: object) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return encode(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR), "JPEG", **kw)


def _patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame header declaring ``width``×``height``."""
    at = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4 :]


def _gif_bomb(side: int = 30000) -> bytes:
    """A tiny GIF whose screen and only frame declare ``side``×``side`` pixels."""
    gif = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    struct.pack_into("<HH", gif, 6, side, side)  # logical screen
    desc = gif.index(b"\x2c")  # image descriptor: x, y, w, h
    struct.pack_into("<HH", gif, desc + 5, side, side)
    return bytes(gif)


def _webp_bomb(side: int = 16384) -> bytes:
    """A lossless WebP whose VP8L header declares ``side``×``side`` (268 MP) pixels."""
    webp = bytearray(encode(Image.new("RGB", (8, 8), (9, 99, 199)), "WEBP", lossless=True))
    at = webp.index(b"VP8L") + 8 + 1  # chunk id, size, then the 0x2f signature byte
    bits = int.from_bytes(webp[at : at + 4], "little")
    bits = (bits & ~0xFFFFFFF) | ((side - 1) & 0x3FFF) | (((side - 1) & 0x3FFF) << 14)
    webp[at : at + 4] = bits.to_bytes(4, "little")
    return bytes(webp)


def _bmp_huge(width: int = 60000, height: int = 60000) -> bytes:
    bmp = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    struct.pack_into("<ii", bmp, 18, width, height)
    return bytes(bmp)


def _tiff_huge(side: int = 40000) -> bytes:
    """A little-endian TIFF whose width and length tags declare ``side``×``side``."""
    tif = bytearray(encode(Image.new("L", (4, 4)), "TIFF"))
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", tif, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, tif, entry + 8, side if kind != 3 else min(side, 65535))
    return bytes(tif)


def _animated_webp() -> bytes:
    frames = [Image.fromarray(skd.astronaut()[::4, ::4]), Image.fromarray(255 - skd.astronaut()[::4, ::4])]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _with_exif_segment(jpeg: bytes, payload: bytes) -> bytes:
    """The JPEG with an APP1 "Exif" segment holding ``payload`` inserted after SOI."""
    body = b"Exif\0\0" + payload
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _huge_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription: the largest that fits in one APP1 segment
    exif[0x0112] = 1
    return _jpeg(7, exif=exif.tobytes())


def _corrupt_exif_jpeg() -> bytes:
    # a TIFF header whose first IFD offset points far outside the segment, then junk
    return _with_exif_segment(_jpeg(8), b"II*\0" + struct.pack("<I", 0x7FFFFFF0) + os.urandom(200))


def _loop_exif_jpeg() -> bytes:
    # an IFD that points at itself as its next IFD (a loop)
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 8)
    return _with_exif_segment(_jpeg(9), b"II*\0" + struct.pack("<I", 8) + ifd)


def _png_bad_crc() -> bytes:
    png = bytearray(encode(Image.fromarray(skd.chelsea()), "PNG"))
    at = png.index(b"IDAT") + 4 + 100
    png[at : at + 64] = os.urandom(64)
    return bytes(png)


def good_cases() -> list[Case]:
    """Files every entry point must accept (the :mod:`samples` photos and more)."""
    cases = [Case(name, data, True) for name, (data, _) in good_photos().items()]
    png = encode(Image.fromarray(skd.chelsea()[::2, ::2]), "PNG")
    cases += [
        Case("one-pixel.png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), True),
        Case("one-pixel.jpg", encode(Image.new("RGB", (1, 1), (10, 200, 10)), "JPEG"), True),
        Case("one-pixel.gif", encode(Image.new("P", (1, 1)), "GIF"), True),
        Case("animated.webp", _animated_webp(), True),
        Case("png-named.jpg", png, True),  # wrong extension: the content decides
        Case("jpeg-named.gif", _jpeg(11), True),
        Case("jpeg-no-extension", _jpeg(12), True),
        Case("huge-exif.jpg", _huge_exif_jpeg(), True),
        Case("corrupt-exif.jpg", _corrupt_exif_jpeg(), True),  # broken metadata, fine pixels
        Case("looping-exif.jpg", _loop_exif_jpeg(), True),
        Case("jpeg-plus-zip.jpg", _jpeg(13) + b"PK\x03\x04" + os.urandom(300), True),  # polyglot
        Case("script-in-comment.jpg", _jpeg(14, comment=SCRIPT_COMMENT), True),
        Case("cmyk.tiff", encode(Image.fromarray(skd.astronaut()[::4, ::4]).convert("CMYK"), "TIFF"), True),
        Case("grey-16bit.tiff", encode(Image.fromarray(skd.moon().astype(np.uint16) * 257), "TIFF"), True),
    ]
    return cases


def hostile_cases(byte_limit: int) -> list[Case]:
    """Files every entry point must refuse, with words their reason must contain.

    ``byte_limit`` is the max-bytes setting in force; one file is just above it."""
    jpeg = _jpeg(20, (256, 192))
    png = encode(Image.fromarray(skd.chelsea()), "PNG")
    webp = encode(Image.fromarray(skd.coffee()), "WEBP")
    gif = encode(Image.fromarray(skd.astronaut()[::2, ::2]).quantize(64), "GIF")
    heic = encode(Image.fromarray(skd.astronaut()[::2, ::2]), "HEIF")
    tiff = encode(Image.fromarray(skd.astronaut()[::2, ::2]), "TIFF")
    from_samples = {
        "truncated.jpg": _CORRUPT,
        "empty.jpg": ("empty",),
        "notes.jpg": ("plain text",),
        "bomb.png": _LIMIT,
        "drawing.svg": ("svg",),
        "page.jpg": ("html",),
        "corrupt.png": _CORRUPT,
        "too-tall.png": _LIMIT,
        "report.png": ("pdf",),
        "huge.jpg": _LIMIT,
    }
    samples = hostile_files(byte_limit)
    cases = [Case(f"s-{name}", samples[name][0], False, reason) for name, reason in from_samples.items()]
    svg_script = (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)">'
        b"<script>fetch('/api/v1/votes/export')</script></svg>"
    )
    cases += [
        Case("truncated.png", png[: len(png) // 3], False, _CORRUPT),
        Case("truncated.webp", webp[: len(webp) // 2], False, _NOT_IMAGE),
        Case("truncated.gif", gif[: len(gif) // 2], False, _CORRUPT),
        Case("truncated.heic", heic[: len(heic) // 2], False, _NOT_IMAGE),
        Case("truncated.tiff", tiff[: len(tiff) // 2], False, _CORRUPT),
        Case("jpeg-header-only.jpg", jpeg[:2], False, _NOT_IMAGE),
        Case("jpeg-no-scan.jpg", jpeg[: jpeg.index(b"\xff\xda")], False, _CORRUPT),
        Case("png-bad-idat.png", _png_bad_crc(), False, _CORRUPT),
        Case("png-signature-only.png", png[:8], False, _NOT_IMAGE),
        Case("gif-bomb.gif", _gif_bomb(), False, _LIMIT),
        Case("webp-bomb.webp", _webp_bomb(), False, _LIMIT),
        Case("png-wide-bomb.png", png_header_only(30000, 1), False, _LIMIT),
        Case("jpeg-declares-65000.jpg", _patch_jpeg_size(jpeg, 65000, 65000), False, _LIMIT),
        Case("bmp-declares-60000.bmp", _bmp_huge(), False, _LIMIT),
        Case("tiff-declares-40000.tiff", _tiff_huge(), False, _LIMIT),
        Case("svg-with-script.svg", svg_script, False, ("svg",)),
        Case("svg-named.png", b'<?xml version="1.0"?>\n' + svg_script, False, ("svg",)),
        Case("html-named.png", HTML.replace(b"<body>", b"<body><script>alert(1)</script>"), False, ("html",)),
        Case("pdf-named.jpg", PDF, False, ("pdf",)),
        Case("jpeg-magic-then-pdf.jpg", b"\xff\xd8\xff\xe0" + PDF, False, _NOT_IMAGE),
        Case("png-magic-then-html.png", b"\x89PNG\r\n\x1a\n" + HTML, False, _NOT_IMAGE),
        Case("gif-magic-then-js.gif", b"GIF89a/*" + b"*/=alert(1);//" * 4, False, _NOT_IMAGE),
        Case("zip.jpg", b"PK\x03\x04" + os.urandom(500), False, ("zip",)),
        Case("json.png", b'{"image": "not really", "width": 1}', False, ("json",)),
        Case("noise.bin", np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(), False,
             ("not a supported image",)),
        Case("nul-bytes.jpg", b"\0" * 2048, False, ("not a supported image",)),
        Case("elf.webp", b"\x7fELF\x02\x01\x01" + b"\0" * 1000, False, ("not a supported image",)),
    ]
    return cases


def corpus(byte_limit: int) -> list[Case]:
    """Every case: good ones first, then hostile ones (≥ 40 in all); names are unique."""
    cases = good_cases() + hostile_cases(byte_limit)
    assert len({c.name for c in cases}) == len(cases)
    return cases


def huge_upload(path: Path, size: int = 100 * 1024 * 1024) -> Path:
    """Write a ``size``-byte file that starts like a JPEG (a 100 MB upload), chunk by chunk."""
    head = _jpeg(30)
    with path.open("wb") as f:
        f.write(head)
        block = b"\xa5" * (1 << 20)
        left = size - len(head)
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def write_corpus(folder: Path, cases: list[Case]) -> dict[str, Case]:
    """Write each case to ``folder`` under its name; return the cases by name."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        (folder / c.name).write_bytes(c.data)
    return {c.name: c for c in cases}


def png_of(width: int, height: int) -> bytes:
    """A plain RGB PNG (helper for tests that need one more valid file)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buf, "PNG")
    return buf.getvalue()
