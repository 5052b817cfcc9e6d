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
