"""Safe image decoding: the one function every entry point (ingest, API, scoring) uses.

Formats are recognised by content, never by file name. The size in the header is checked
against the limits *before* any pixel is decoded (``Image.open`` is lazy), so decompression
bombs are refused cheaply. Every failure is one :class:`ImageError` whose message a person
understands. The result is always 8-bit RGB with EXIF orientation applied and any
transparency composited on white.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

#: Pillow format id -> the format name doohable reports (MPO is a multi-picture JPEG).
ACCEPTED_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WEBP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "HEIF": "HEIF",
}
# the openers to try (Pillow's JPEG opener returns MPO files itself)
_OPENERS = [f for f in ACCEPTED_FORMATS if f != "MPO"]
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90°
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """The bytes are not an image doohable accepts; the message says why, for a person."""


@dataclass(frozen=True)
class Decoded:
    """A decoded image.

    Attributes
    ----------
    image : RGB ``PIL.Image.Image``, oriented; smaller than ``width``×``height`` only
        when a ``draft`` size was asked for.
    format : one of ``JPEG, PNG, WEBP, GIF, BMP, TIFF, HEIF``.
    width, height : size of the full image in pixels, after EXIF orientation.
    """

    image: Image.Image
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Limits:
    """Refusal limits: bytes of the file, pixels (width×height) and longest side."""

    max_bytes: int
    max_pixels: int
    max_side: int

    @classmethod
    def resolve(
        cls, max_bytes: int | None = None, max_pixels: int | None = None, max_side: int | None = None
    ) -> Limits:
        """The given limits, with the Settings values for those left as None."""
        from doohable.config import get_settings

        s = get_settings()
        return cls(
            max_bytes if max_bytes is not None else s.max_image_bytes,
            max_pixels if max_pixels is not None else s.max_image_pixels,
            max_side if max_side is not None else s.max_image_side,
        )


def _mb(n: float) -> str:
    return f"{n / 1_000_000:.4g} MB"


def sniff(data: bytes) -> str:
    """A person-readable reason why ``data`` (which Pillow could not open) is not an image."""
    if not data:
        return "empty file (0 bytes)"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "not an image: looks like SVG/XML text (vector images are not accepted)"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not an image: looks like an HTML page"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "not an image: looks like XML/markup text"
    if head.startswith(b"%pdf"):
        return "not an image: looks like a PDF document"
    if head.startswith(b"pk\x03\x04"):
        return "not an image: looks like a ZIP archive"
    if head[:1] in (b"{", b"["):
        return "not an image: looks like JSON text"
    sample = data[:4096]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if printable >= 0.95 * len(sample):
        return "not an image: looks like plain text"
    known = ", ".join(sorted(set(ACCEPTED_FORMATS.values())))
    return f"not a supported image: unrecognised data (accepted formats: {known})"


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # a broken EXIF block must not stop decoding; it just means "upright"
        return 1


def check_size(width: int, height: int, limits: Limits) -> None:
    """Raise :class:`ImageError` when a ``width``×``height`` image is above the limits."""
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageError(
            f"image is {width}×{height} = {pixels / 1e6:.3g} MP, "
            f"above the {limits.max_pixels / 1e6:.3g} MP limit"
        )
    if max(width, height) > limits.max_side:
        raise ImageError(
            f"image is {width}×{height}, its longest side is above the {limits.max_side} px limit"
        )
    if pixels == 0:
        raise ImageError(f"image is {width}×{height}: it has no pixels")


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing Pillow's bomb guard (which raises
    before telling the size); None when no accepted opener reads the header."""
    for name in _OPENERS:
        factory, accept = Image.OPEN[name]
        try:
            if accept is None or accept(data[:16]) is True:
                return factory(io.BytesIO(data), "").size  # type: ignore[no-any-return]
        except Exception:
            continue
    return None


def _open(data: bytes, limits: Limits) -> Image.Image:
    """Open lazily (header only) and check the header size before anything is decoded."""
    if not data:
        raise ImageError(sniff(data))
    if len(data) > limits.max_bytes:
        raise ImageError(f"file is {_mb(len(data))}, above the {_mb(limits.max_bytes)} limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPENERS)
    except Image.DecompressionBombError as e:
        # Pillow's own guard fires at open for sizes far above ours: say it our way
        size = _declared_size(data)
        if size is not None:
            check_size(*size, limits)
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(found.group(1)) / 1e6:.3g} MP" if found else "far too many pixels"
        raise ImageError(f"image has {pixels}, above the {limits.max_pixels / 1e6:.3g} MP limit") from e
    except UnidentifiedImageError as e:
        raise ImageError(sniff(data)) from e
    except Exception as e:
        raise ImageError(f"corrupt image header: {e}") from e
    check_size(im.width, im.height, limits)
    return im


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth array to uint8 by its range (16-bit: 0..65535 -> 0..255).

    Integers within 0..65535 are treated as 16-bit; floats within 0..1 as unit range;
    anything else is stretched from its minimum to its maximum.
    """
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if np.issubdtype(arr.dtype, np.integer) and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    elif np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    span = (hi - lo) or 1.0
    return np.clip(np.rint((a - lo) * (255.0 / span)), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit/float scaled, CMYK/palette/grey converted,
    transparency composited on white."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        im = Image.fromarray(to_8bit(np.asarray(im)), mode="L")
    has_alpha = "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_side: int | None = None,
    draft: tuple[int, int] | None = None,
) -> Decoded:
    """Decode image bytes safely to RGB.

    Parameters
    ----------
    data : the file's bytes; the format is found from them, never from a name.
    max_bytes, max_pixels, max_side : limits; None = the Settings values.
    draft : (w, h) wanted at least; JPEGs are then decoded at a reduced scale
        (1/2, 1/4 or 1/8) that still covers w×h, which is much faster for scoring.

    Raises
    ------
    ImageError : empty, too large, truncated, corrupt, or not an accepted image.
    """
    limits = Limits.resolve(max_bytes, max_pixels, max_side)
    im = _open(data, limits)
    fmt = ACCEPTED_FORMATS.get(im.format or "")
    if fmt is None:  # an opener may name a variant we do not accept (e.g. AVIF from the HEIF one)
        raise ImageError(f"unsupported image format {im.format}")
    width, height = im.width, im.height
    try:
        if fmt == "JPEG":  # JPEG: EXIF is in the header, so the draft size can follow it
            orientation = _orientation(im)
            if draft is not None:
                w, h = max(1, draft[0]), max(1, draft[1])
                im.draft("RGB", (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h))
        im.seek(0)  # first frame of animations
        im.load()
        if fmt != "JPEG":  # other formats may keep EXIF after the pixels; read it once loaded
            orientation = _orientation(im)
        rgb = to_rgb(ImageOps.exif_transpose(im) if orientation != 1 else im)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError... on bad data
        reason = str(e) or type(e).__name__
        kind = "truncated" if "truncated" in reason or isinstance(e, EOFError) else "truncated or corrupt"
        raise ImageError(f"{kind} {fmt} data: {reason}") from e
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return Decoded(image=rgb, format=fmt, width=width, height=height)


def read_limited(path: str | Path, max_bytes: int | None = None) -> bytes:
    """Read a file's bytes, refusing it (by its size on disk) before reading when too large."""
    limit = Limits.resolve(max_bytes=max_bytes).max_bytes
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise ImageError(f"file is {_mb(size)}, above the {_mb(limit)} limit")
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ImageError(f"cannot read {p}: {e.strerror or e}") from e
    if len(data) > limit:  # the file grew while we read it
        raise ImageError(f"file is above the {_mb(limit)} limit")
    return data


def load(
    path: str | Path,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_side: int | None = None,
    draft: tuple[int, int] | None = None,
) -> Decoded:
    """Read and decode a file (keywords as in :func:`decode`); a file above the byte
    limit is refused by its size on disk, before it is read."""
    data = read_limited(path, max_bytes)
    return decode(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side, draft=draft)
