"""Load any scorer by name or path: a single ONNX model (``selfie``, ``selfie-fast``, ``photo``,
a ``.onnx`` file) or the combined default (``default``, a combination ``.json`` file).

The bundled default (``None``) is ``default`` when the package holds the photo part's model
(``bundled/photo.onnx``), else ``selfie``.
"""

from __future__ import annotations

import os
from pathlib import Path

from doohable.model.default import COMBINATION_PATH, NAME, PHOTO_MODEL, CombinedScorer, load_combined
from doohable.model.runtime import BUNDLED_DIR, DEFAULT_MODEL, Scorer, load_scorer, resolve_model_path

AnyScorer = Scorer | CombinedScorer


def default_name() -> str:
    """The bundled default's name: ``default`` with the photo model bundled, else ``selfie``."""
    return NAME if (BUNDLED_DIR / f"{PHOTO_MODEL}.onnx").is_file() else DEFAULT_MODEL


def load_any(name_or_path: str | os.PathLike[str] | None = None, *, threads: int = 0) -> AnyScorer:
    """A scorer by bundled name or path (None: :func:`default_name`)."""
    ref = default_name() if name_or_path is None else name_or_path
    if str(ref) == NAME:
        return load_combined(COMBINATION_PATH, threads=threads)
    if Path(ref).suffix == ".json":
        return load_combined(Path(ref), threads=threads)
    return load_scorer(ref, threads=threads)


def check_reference(name_or_path: str | os.PathLike[str]) -> None:
    """``FileNotFoundError`` with a clear message when ``name_or_path`` names no scorer (an
    unknown name, a missing file); a file that exists is not opened."""
    ref = str(name_or_path)
    if ref == NAME:
        return
    if Path(ref).suffix == ".json":
        if not Path(ref).is_file():
            raise FileNotFoundError(f"combination file not found: {ref}")
        return
    resolve_model_path(ref)
