"""Score images with an exported ONNX scorer, through ONNX Runtime, without importing torch.

The ONNX graph takes ``image``: uint8 (N, S, S, 3) RGB and returns ``score``: float32 (N,) on
the model's scale; normalisation happens inside the graph. Its ``metadata_props`` carry
``name``, ``input_size``, ``scale`` and ``resize_policy``. :meth:`Scorer.prepare` applies the
model's resize policy, used by training, batch scoring and the API alike: the squash
(``squash-center-crop-0.875``, the default) or, for quality models, ``short-side-R-center-crop-S``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from doohable.model.face.branch import FaceBranch
from doohable.model.preprocess import (
    CROP_FRACTION,
    RESIZE_POLICY,
    center_crop,
    decode_side,
    prepare_image,
    prepare_short_side,
    resize_side,
    short_side_policy,
    squash,
)
from doohable.model.session import onnx_session

__all__ = [
    "BUNDLED_DIR", "CROP_FRACTION", "DEFAULT_MODEL", "RESIZE_POLICY", "Scorer", "center_crop",
    "face_branch_path", "load_scorer", "model_version", "onnx_session", "prepare_image", "read_metadata",
    "resize_side", "resolve_model_path", "squash", "decode_side", "prepare_short_side", "short_side_policy",
]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "selfie"
def resolve_model_path(name_or_path: str | os.PathLike[str] | None) -> Path:
    """``None`` -> the bundled default; a bundled name (``selfie``) -> its file; else a path."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    candidate = Path(name_or_path)
    if candidate.suffix == ".onnx" or candidate.exists():
        if not candidate.is_file():
            raise FileNotFoundError(f"model file not found: {candidate}")
        return candidate
    bundled = BUNDLED_DIR / f"{name_or_path}.onnx"
    if bundled.is_file():
        return bundled
    bundled_files = [*BUNDLED_DIR.glob("*.onnx"), *BUNDLED_DIR.glob("*.json")]  # .json: the combined default
    known = sorted(p.stem for p in bundled_files)
    raise FileNotFoundError(
        f"unknown model {str(name_or_path)!r}: not a file and not a bundled model "
        f"(bundled: {', '.join(known)})"
    )


@dataclass
class Scorer:
    """An exported scorer loaded in ONNX Runtime.

    Attributes
    ----------
    name : model name (metadata).
    version : first 12 hex digits of the .onnx file's SHA-256.
    input_size : side S of the square uint8 input.
    scale : (lowest, highest) score.
    metadata : every metadata_props entry.
    face : the face branch (``<model>.face.npz`` beside the .onnx), blended into the CNN's
        score where a face is found; ``None`` for a CNN-only model.
    """

    name: str
    version: str
    input_size: int
    scale: tuple[float, float]
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)
    _session: Any = field(default=None, repr=False)
    face: FaceBranch | None = field(default=None, repr=False)

    @property
    def resize_policy(self) -> str:
        """How :meth:`prepare` resizes (metadata ``resize_policy``; default: the squash)."""
        return self.metadata.get("resize_policy", RESIZE_POLICY)

    @property
    def decode_side(self) -> int:
        """The smallest side a JPEG may be decoded at (draft) before :meth:`prepare`."""
        return decode_side(self.resize_policy, self.input_size)

    def prepare(self, img: Image.Image) -> np.ndarray:
        """PIL image -> uint8 (S, S, 3) by the model's ``resize_policy`` (default: the squash)."""
        short = short_side_policy(self.resize_policy)
        if short is not None:
            return prepare_short_side(img, short[0], self.input_size)
        return prepare_image(img, self.input_size)

    def score(self, batch: np.ndarray, face_boxes: list[Any] | None = None) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB -> float32 (N,) scores on ``scale``. ``face_boxes``: each
        crop's face (dlib rectangle) when a detector has already found it, for the face branch."""
        s = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(
                f"expected uint8 array of shape (N, {s}, {s}, 3), got {batch.dtype} {batch.shape}"
            )
        if batch.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._session.run(["score"], {"image": np.ascontiguousarray(batch)})[0]
        cnn = np.asarray(out, dtype=np.float32).reshape(-1)
        if self.face is None:
            return cnn
        return np.clip(self.face.blend(cnn, batch, face_boxes), *self.scale).astype(np.float32)

    def score_images(self, images: list[Image.Image]) -> np.ndarray:
        """Convenience: prepare then score a list of PIL images."""
        s = self.input_size
        batch = np.stack([self.prepare(i) for i in images]) if images else np.zeros((0, s, s, 3), np.uint8)
        return self.score(batch)


def read_metadata(path: Path) -> dict[str, str]:
    """metadata_props of an ONNX file (without loading the weights into a session)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def load_scorer(name_or_path: str | os.PathLike[str] | None = None, *, threads: int = 0) -> Scorer:
    """Load an exported scorer: ``None`` = the bundled default model.

    Parameters
    ----------
    name_or_path : bundled model name, or path to an ``.onnx`` exported by ``doohable.model.export``.
    threads : ONNX Runtime intra-op threads; 0 lets it choose (number of cores).
    """
    path = resolve_model_path(name_or_path)
    data = path.read_bytes()
    try:
        session = onnx_session(data, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = {"name", "input_size", "scale"} - set(meta)
    if missing:
        raise ValueError(f"{path}: not a doohable scorer (metadata lacks {', '.join(sorted(missing))})")
    lo, hi = json.loads(meta["scale"])
    face = None
    sidecar = face_branch_path(path)
    if sidecar.is_file():
        face = FaceBranch.load(sidecar, threads=threads)
        meta["face_branch"] = sidecar.name
        meta["face_weight"] = str(face.weight)
        meta["face_calibration"] = json.dumps(face.calibration)
        if face.stack is not None:  # with a fine-tuned face network: the stack replaces the blend
            meta["face_stack"] = json.dumps(face.stack)
    return Scorer(
        name=meta["name"],
        version=model_version(path, data),
        input_size=int(meta["input_size"]),
        scale=(float(lo), float(hi)),
        path=path,
        metadata=meta,
        _session=session,
        face=face,
    )


def model_version(path: Path, data: bytes | None = None) -> str:
    """First 12 hex digits of the SHA-256 of the .onnx file (``data``: its bytes, if read) and
    of its face branch, if any."""
    digest = hashlib.sha256(path.read_bytes() if data is None else data)
    sidecar = face_branch_path(path)
    if sidecar.is_file():
        digest.update(sidecar.read_bytes())
    return digest.hexdigest()[:12]


def face_branch_path(model_path: Path) -> Path:
    """Where a model's face branch lives: ``selfie.onnx`` -> ``selfie.face.npz``."""
    return model_path.with_name(model_path.stem + ".face.npz")
