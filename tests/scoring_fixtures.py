"""Helpers for the moderation/serving tests: a tiny real ONNX scorer whose score is known.

The "brightness" scorer is a genuine doohable ONNX scorer (uint8 NHWC ``image`` in, float32
``score`` out, the metadata the runtime needs) computing ``1 + 4 * mean(pixels) / 255``: a
white image scores 5, a black one 1, so tests can predict scores and orders exactly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image


def brightness_model(path: Path, input_size: int = 32, name: str = "brightness") -> Path:
    """Write the brightness scorer to ``path`` and return it."""
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["mk"]),
        helper.make_node("Add", ["mk", "one"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", input_size, input_size, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])],
        initializer=[
            helper.make_tensor("k", TensorProto.FLOAT, [], [4.0 / 255.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {
        "name": name,
        "input_size": str(input_size),
        "scale": "[1.0, 5.0]",
        "resize_policy": "squash-center-crop-0.875",
    }.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def jpeg_of_gray(level: int, size: tuple[int, int] = (120, 90), quality: int = 95) -> bytes:
    """A flat gray JPEG: its brightness score is about ``1 + 4 * level / 255``."""
    buf = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def expected_score(level: int) -> float:
    return 1.0 + 4.0 * level / 255.0


def photo_jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A noisy colour JPEG (distinct perceptual hash per seed, so never a near-duplicate)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def standin_combination(folder: Path, portrait: tuple[float, float, float] = (0.5, 0.6, 0.3)) -> Path:
    """A default-scorer combination JSON in ``folder`` whose photo part is a stand-in (the
    brightness scorer at 224 px, next to the JSON) and whose face part is ``selfie-fast``."""
    from doohable.model.default import Combination

    brightness_model(folder / "standin-photo.onnx", input_size=224, name="standin-photo")
    comb = Combination(photo_model="standin-photo.onnx", face_model="selfie-fast", portrait=portrait,
                       other=(0.1, 0.9))
    return comb.save(folder / "mine.json")
