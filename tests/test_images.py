"""doohable.images: every decoding case on real files made here, and every refusal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skd

from doohable.images import Decoded, ImageError, decode, load, sniff, to_8bit
from samples import (
    HTML,
    PDF,
    SVG,
    animated_gif,
    encode,
    good_photos,
    hostile_files,
    palette_png_with_transparency,
    png_header_only,
    rotated_jpeg,
    sixteen_bit_png,
)

GOOD = good_photos()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_photos_decode_to_rgb_with_their_format_and_size(name: str) -> None:
    data, want = GOOD[name]
    d = decode(data)
    assert isinstance(d, Decoded)
    assert (d.format, d.width, d.height) == (want.format, want.width, want.height)
    assert d.image.mode == "RGB"
    assert d.image.size == (want.width, want.height)
    assert np.asarray(d.image).std() > 10  # real picture content, not a blank frame


HOSTILE = hostile_files(byte_limit=4_000_000)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_with_a_clear_reason(name: str) -> None:
    data, reason = HOSTILE[name]
    with pytest.raises(ImageError) as err:
        decode(data, max_bytes=4_000_000, max_pixels=50_000_000, max_side=20_000)
    assert reason in str(err.value)


def test_format_is_found_by_content_not_by_name(tmp_path: Path) -> None:
    png = encode(Image.fromarray(skd.chelsea()), "PNG")
    path = tmp_path / "really-a-png.jpg"
    path.write_bytes(png)
    assert load(path).format == "PNG"
    text = tmp_path / "photo.jpg"
    text.write_text("hello, I am a text file named like a photo\n")
    with pytest.raises(ImageError, match="plain text"):
        load(text)


def test_exif_rotation_swaps_width_and_height_and_turns_pixels() -> None:
    stored = Image.fromarray(skd.coins())  # 384 wide, 303 high
    d = decode(rotated_jpeg(6))
    assert (d.width, d.height) == (303, 384)
    assert d.image.size == (303, 384)
    # orientation 6 = the camera was turned clockwise: turning the stored picture 270° ccw
    want = np.asarray(stored.transpose(Image.Transpose.ROTATE_270), dtype=float)
    got = np.asarray(d.image.convert("L"), dtype=float)
    assert np.abs(got - want).mean() < 3  # same picture, only JPEG noise
    assert np.abs(got - np.asarray(stored.transpose(Image.Transpose.ROTATE_90), dtype=float)).mean() > 20


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation_gives_the_right_size(orientation: int) -> None:
    d = decode(rotated_jpeg(orientation))
    assert (d.width, d.height) == ((303, 384) if orientation >= 5 else (384, 303))
    assert d.image.size == (d.width, d.height)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    data, moon = sixteen_bit_png()
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = np.asarray(decode(data).image)
    assert np.array_equal(got[..., 0], moon)  # v*257 -> v exactly
    assert (got == 255).mean() < 0.01  # clipping 16-bit values to 8 bits would saturate nearly all


def test_sixteen_bit_scaling_function() -> None:
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    assert to_8bit(arr).tolist() == [[0, 1, 128, 255]]
    assert to_8bit(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).tolist() == [[0, 128, 255]]
    assert to_8bit(np.array([[-10.0, 10.0]])).tolist() == [[0, 255]]


def test_sixteen_bit_tiff_and_float_tiff() -> None:
    moon = skd.moon()
    d16 = decode(encode(Image.fromarray(moon.astype(np.uint16) * 257), "TIFF"))
    assert np.array_equal(np.asarray(d16.image)[..., 0], moon)
    dfloat = decode(encode(Image.fromarray(moon.astype(np.float32) / 255.0), "TIFF"))
    assert np.abs(np.asarray(dfloat.image)[..., 0].astype(int) - moon).max() <= 1


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    rgb = Image.fromarray(skd.astronaut())
    d = decode(encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert d.image.mode == "RGB"
    diff = np.abs(np.asarray(d.image, dtype=float) - np.asarray(rgb, dtype=float)).mean()
    assert diff < 12  # not inverted (an inverted CMYK reading differs by ~100)


def test_animated_gif_gives_its_first_frame() -> None:
    d = decode(animated_gif())
    got = np.asarray(d.image, dtype=float)
    first = skd.immunohistochemistry().astype(float)
    assert np.abs(got - first).mean() < 15  # palette quantisation only
    assert np.abs(got - (255 - first)).mean() > 60


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red, fully transparent on the left half, opaque on the right
    rgba[:, 15:, 3] = 255
    got = np.asarray(decode(encode(Image.fromarray(rgba), "PNG")).image)
    assert got[0, 0].tolist() == [255, 255, 255]
    assert got[0, 20].tolist() == [200, 0, 0]


def test_grey_with_alpha_and_palette_with_transparency() -> None:
    la = Image.fromarray(np.stack([np.full((8, 8), 40, np.uint8), np.zeros((8, 8), np.uint8)], -1), "LA")
    assert np.asarray(decode(encode(la, "PNG")).image).min() == 255  # transparent -> white
    pal = decode(palette_png_with_transparency()).image
    corner = np.asarray(pal)[0, 0]  # colorwheel's black corner is the transparent index
    assert corner.tolist() == [255, 255, 255]
    assert np.asarray(pal).std() > 30


def test_greyscale_bilevel_and_palette_become_rgb() -> None:
    for im in (
        Image.fromarray(skd.camera()),
        Image.fromarray(skd.horse()).convert("1"),
        Image.fromarray(skd.astronaut()).quantize(32),
    ):
        d = decode(encode(im, "PNG"))
        assert d.image.mode == "RGB" and d.image.size == im.size


def test_webp_with_alpha_bmp_tiff_heic_round_trip() -> None:
    astro = Image.fromarray(skd.astronaut())
    for fmt, tol in (("WEBP", 6), ("BMP", 0), ("TIFF", 0), ("HEIF", 8)):
        d = decode(encode(astro, fmt, **({"quality": 95} if fmt in ("WEBP", "HEIF") else {})))
        assert d.format == fmt
        assert np.abs(np.asarray(d.image, dtype=float) - skd.astronaut()).mean() <= tol


def test_heic_with_alpha() -> None:
    logo = Image.fromarray(skd.logo())
    d = decode(encode(logo, "HEIF", quality=90))
    assert d.format == "HEIF" and d.image.mode == "RGB"
    assert np.asarray(d.image)[0, 0].tolist() == [255, 255, 255]  # the logo's transparent corner


def test_limits_pixels_side_and_bytes_are_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match=r"image is 8000×8000 = 64 MP, above the 50 MP limit"):
        decode(png_header_only(8000, 8000))
    with pytest.raises(ImageError, match=r"image is 20000×20000 = 400 MP, above the 50 MP limit"):
        decode(png_header_only(20000, 20000))
    with pytest.raises(ImageError, match="longest side is above the 300 px limit"):
        decode(encode(Image.fromarray(skd.chelsea()), "PNG"), max_side=300)
    with pytest.raises(ImageError, match="above the 0.001 MB limit"):
        decode(encode(Image.fromarray(skd.chelsea()), "PNG"), max_bytes=1000)
    with pytest.raises(ImageError, match=r"0.1 MP limit"):
        decode(encode(Image.fromarray(skd.astronaut()), "JPEG"), max_pixels=100_000)


def test_limits_default_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from doohable.config import get_settings

    monkeypatch.setenv("DOOHABLE_MAX_IMAGE_PIXELS", "1000")
    get_settings.cache_clear()
    try:
        with pytest.raises(ImageError, match="0.001 MP limit"):
            decode(encode(Image.fromarray(skd.chelsea()), "PNG"))
    finally:
        get_settings.cache_clear()


def test_load_refuses_a_large_file_before_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(5_000_000)  # sparse: nothing to read
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *a: object, **k: object):  # type: ignore[no-untyped-def]
        opened.append(str(self))
        return real_open(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", spy)
    with pytest.raises(ImageError, match="5 MB, above the 1 MB limit"):
        load(big, max_bytes=1_000_000)
    assert str(big) not in opened
    with pytest.raises(ImageError, match="cannot read"):
        load(tmp_path / "missing.jpg")


def test_draft_decodes_jpeg_smaller_but_reports_full_size() -> None:
    d = decode(encode(Image.fromarray(skd.astronaut()), "JPEG"), draft=(100, 100))
    assert (d.width, d.height) == (512, 512)
    assert d.image.size == (128, 128)  # 1/4 scale still covers 100×100
    r = decode(rotated_jpeg(6), draft=(150, 150))
    assert (r.width, r.height) == (303, 384)
    assert min(r.image.size) >= 150 and r.image.size[0] < r.image.size[1]
    png = decode(encode(Image.fromarray(skd.chelsea()), "PNG"), draft=(50, 50))
    assert png.image.size == (451, 300)  # no draft mode outside JPEG


def test_sniff_reasons() -> None:
    assert sniff(b"") == "empty file (0 bytes)"
    assert "SVG" in sniff(SVG) and "SVG" in sniff(b"<svg xmlns='x'/>")
    assert "HTML" in sniff(b"\xef\xbb\xbf  " + HTML)
    assert "PDF" in sniff(PDF)
    assert "ZIP" in sniff(b"PK\x03\x04" + bytes(100))
    assert "unrecognised" in sniff(bytes(range(256)))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff",  # JPEG start marker only
        b"\x89PNG\r\n\x1a\n",  # PNG signature only
        b"GIF89a\x10\x00\x10\x00",  # GIF header without data
        b"BM" + bytes(60),  # BMP header of zeros
        b"II*\x00" + bytes(20),  # TIFF header, no directory
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",  # WebP header only
    ],
)
def test_headers_without_data_raise_image_error(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode(data)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "HEIF"])
def test_exif_orientation_in_other_formats(fmt: str) -> None:
    """EXIF orientation 6 stored in PNG (eXIf), WebP, TIFF and HEIF files is applied once."""
    stored = Image.fromarray(skd.coins()).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    d = decode(encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "HEIF" else {})))
    assert (d.width, d.height) == (303, 384) and d.image.size == (303, 384)
    want = np.asarray(stored.convert("L").transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(np.asarray(d.image.convert("L"), dtype=float) - want).mean() < 4


@pytest.mark.parametrize("name", sorted(GOOD))
def test_mutated_files_raise_only_image_error(name: str) -> None:
    """Random byte flips, cuts and insertions (seeded): the result is an image or an
    ImageError, never another exception."""
    import random

    rng = random.Random(name)
    data = GOOD[name][0]
    for _ in range(25):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.6:
                b[i] = rng.randrange(256)
            elif op < 0.8:
                del b[i : i + rng.randint(1, 64)]
            else:
                b[i:i] = rng.randbytes(rng.randint(1, 16))
        try:
            d = decode(bytes(b))
        except ImageError:
            continue
        assert d.image.mode == "RGB" and d.image.size == (d.width, d.height)
