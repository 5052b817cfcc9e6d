"""The resize policy of the scorers: PIL image -> the uint8 (S, S, 3) crop a network sees.

Used by training, batch scoring and the API alike (``Scorer.prepare``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_POLICY = "squash-center-crop-0.875"
CROP_FRACTION = 0.875  # squash to round(S / 0.875) px square, then centre-crop S (224 <- 256)


def resize_side(input_size: int) -> int:
    """Side of the square the image is squashed to before cropping ``input_size``."""
    return int(round(input_size / CROP_FRACTION))


def squash(img: Image.Image, side: int) -> np.ndarray:
    """RGB image -> uint8 (side, side, 3), aspect ratio ignored (as NIMA), antialiased bilinear."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.asarray(rgb.resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint8)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of an (H, W, ...) array."""
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def prepare_image(img: Image.Image, input_size: int) -> np.ndarray:
    """The resize policy: squash to ``resize_side(S)``, centre-crop S -> uint8 (S, S, 3)."""
    return np.ascontiguousarray(center_crop(squash(img, resize_side(input_size)), input_size))


def short_side_policy(policy: str) -> tuple[int, int] | None:
    """``short-side-R-center-crop-S`` -> (R, S); any other policy name -> ``None``."""
    parts = policy.split("-")
    if len(parts) == 6 and parts[:2] == ["short", "side"] and parts[3:5] == ["center", "crop"]:
        r, s = int(parts[2]), int(parts[5])
        if r >= s > 0:
            return r, s
    return None


def decode_side(policy: str, input_size: int) -> int:
    """Smallest side a decoder may reduce an image to (JPEG draft) before ``policy`` applies."""
    short = short_side_policy(policy)
    return short[0] if short is not None else resize_side(input_size)


def prepare_short_side(img: Image.Image, short_side: int, size: int) -> np.ndarray:
    """Aspect kept: resize so the short side is ``short_side`` (antialiased bilinear; a photo
    already at that scale is left untouched), then the centre S x S crop -> uint8 (S, S, 3).

    Quality models see pixels near the training photos' scale, so blur and noise survive.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    w, h = rgb.size
    if min(w, h) != short_side:
        k = short_side / min(w, h)
        rgb = rgb.resize((max(size, round(w * k)), max(size, round(h * k))), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(center_crop(np.asarray(rgb, dtype=np.uint8), size))
