"""The default scorer: photo quality for every image, face beauty where a portrait fills the frame.

Per image:

1. the photo part: the ``photo`` model's score (technical quality, 1-5);
2. the gate: dlib's HOG face detector on the face model's crop drawn at ``gate_side`` px
   straight from the image (112: a few ms), without upsampling, so it finds only faces at
   least ~65 % as wide as the crop: a portrait that fills the frame; a detection counts from
   the detector score ``gate_threshold`` (fitted on faces and other photos,
   :func:`choose_gate_threshold`). An image whose best detection scores between
   ``gate_second_opinion`` and the threshold (about 2 % of photos) is shown to OpenCV's Haar
   cascade for frontal faces (``alt2``, under 1 ms), which opens the gate if it finds a face that
   wide. The face model's own input is prepared only where the gate opens;
3. the face part, only where the gate opens: the ``selfie`` model's score (its CNN ensemble and
   face branch), its face branch aligning the face the gate found (scaled to the crop; its
   mirror image's face: the box mirrored) instead of detecting it again (dlib's HOG upsampled
   once on the crop and on its mirror image, ~50 ms): the same accuracy to 1e-4 Pearson
   (docs/benchmarks.md);
4. the score, on 1-5: ``c0 + c1 * face + c2 * photo`` where the face part applies,
   ``d0 + d1 * photo`` elsewhere, clipped to the scale.

The coefficients and the gate live in a small JSON file beside the models
(``bundled/default.json``, :class:`Combination`); :func:`fit_combination` fits them by least
squares on scored images with targets on the 1-5 scale (a labelled data set, or in-house votes:
``doohable.model.calibrate``). The scorer's version hashes both models and the JSON.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from doohable.model.face.embed import frontal_face_detector, largest, scale_box
from doohable.model.preprocess import RESIZE_POLICY, decode_side, prepare_image, resize_side, resized_crop
from doohable.model.runtime import (
    BUNDLED_DIR,
    Scorer,
    load_scorer,
    model_version,
    resolve_model_path,
)

NAME = "default"
PHOTO_MODEL = "photo"  # the photo part's bundled model
FACE_MODEL = "selfie"  # the face part's bundled model
FORMAT = "doohable-default-1"
GATE_SIDE = 112
# detector score from which the gate opens (dlib's own default: 0), and the grid it is chosen from
GATE_THRESHOLD = 0.0
GATE_GRID = (0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6)
# the share of the crop's width a face must have (the HOG detector's ~80 px smallest face at 112)
GATE_MIN_WIDTH = 0.65
COMBINATION_PATH = BUNDLED_DIR / f"{NAME}.json"


@dataclass(frozen=True)
class Combination:
    """How the parts make the score (see the module's docstring); ``fitted``: on what data and
    with what result the coefficients were fitted (free-form, kept in the JSON).
    ``face_input``: the face model's input side and resize policy, so that images are prepared
    for it before it is loaded (checked against its metadata when it is)."""

    photo_model: str = PHOTO_MODEL
    face_model: str = FACE_MODEL
    gate_side: int = GATE_SIDE
    portrait: tuple[float, float, float] = (0.0, 1.0, 0.0)  # c0, c1 (face), c2 (photo)
    other: tuple[float, float] = (0.0, 1.0)  # d0, d1 (photo)
    scale: tuple[float, float] = (1.0, 5.0)
    fitted: dict[str, Any] = field(default_factory=dict)
    face_input: tuple[int, str] = (224, RESIZE_POLICY)
    gate_threshold: float = GATE_THRESHOLD
    gate_second_opinion: float | None = None  # HOG score from which the Haar cascade is asked

    def __post_init__(self) -> None:
        if len(self.portrait) != 3 or len(self.other) != 2:
            raise ValueError("a combination has 3 portrait and 2 other coefficients")
        if not 32 <= int(self.gate_side) <= 1024:
            raise ValueError(f"gate_side must be in [32, 1024], got {self.gate_side}")
        if not -1.0 <= float(self.gate_threshold) <= 1.0:
            raise ValueError(f"gate_threshold must be in [-1, 1], got {self.gate_threshold}")
        second = self.gate_second_opinion
        if second is not None and not -1.0 <= float(second) <= float(self.gate_threshold):
            raise ValueError(f"gate_second_opinion must be in [-1, gate_threshold], got {second}")

    def combine(self, photo: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(N,) photo and face parts (NaN: no portrait) -> (N,) scores on ``scale``."""
        photo, face = np.asarray(photo, np.float64), np.asarray(face, np.float64)
        c0, c1, c2 = self.portrait
        d0, d1 = self.other
        out = np.where(np.isnan(face), d0 + d1 * photo, c0 + c1 * np.nan_to_num(face) + c2 * photo)
        return np.clip(out, *self.scale).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Combination:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable combination ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path}: not a doohable combination (format {FORMAT})")
        try:
            return cls(
                str(doc["photo_model"]), str(doc["face_model"]), int(doc["gate_side"]),
                tuple(float(v) for v in doc["portrait"]),  # type: ignore[arg-type]
                tuple(float(v) for v in doc["other"]),  # type: ignore[arg-type]
                (float(doc["scale"][0]), float(doc["scale"][1])), dict(doc.get("fitted", {})),
                (int(doc["face_input"][0]), str(doc["face_input"][1])),
                float(doc.get("gate_threshold", GATE_THRESHOLD)),
                None if doc.get("gate_second_opinion") is None else float(doc["gate_second_opinion"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{path}: bad combination ({e})") from e


def fit_combination(
    photo: np.ndarray, face: np.ndarray, y: np.ndarray, base: Combination, *, fitted: dict[str, Any]
) -> Combination:
    """Least-squares coefficients on scored images: ``y ~ c0 + c1 face + c2 photo`` on the rows
    with a face part, ``y ~ d0 + d1 photo`` on the others (each needs 3+ rows, else ``base``'s
    coefficients stay). ``y`` on the combination's scale."""
    photo, face, y = (np.asarray(a, np.float64) for a in (photo, face, y))
    has_face = ~np.isnan(face)
    portrait, other = base.portrait, base.other
    if has_face.sum() >= 3:
        x = np.column_stack([np.ones(has_face.sum()), face[has_face], photo[has_face]])
        portrait = tuple(float(v) for v in np.linalg.lstsq(x, y[has_face], rcond=None)[0])  # type: ignore[assignment]
    if (~has_face).sum() >= 3:
        x = np.column_stack([np.ones((~has_face).sum()), photo[~has_face]])
        other = tuple(float(v) for v in np.linalg.lstsq(x, y[~has_face], rcond=None)[0])  # type: ignore[assignment]
    counts = {"portraits": int(has_face.sum()), "others": int((~has_face).sum())}
    return Combination(base.photo_model, base.face_model, base.gate_side, portrait, other, base.scale,
                       {**fitted, **counts}, base.face_input, base.gate_threshold, base.gate_second_opinion)


def choose_gate_threshold(
    faces: np.ndarray, others: np.ndarray, grid: tuple[float, ...] = GATE_GRID
) -> float:
    """The gate threshold of ``grid`` with the best balanced accuracy: the mean of the share of
    portraits it opens on (``faces``: each portrait's best detector score, -inf where the
    detector found nothing even at -1) and the share of other photos it stays shut on
    (``others``, the same); the first of equals (the strictest)."""
    faces, others = np.asarray(faces, np.float64), np.asarray(others, np.float64)
    acc = [((faces >= t).mean() + (others < t).mean()) / 2 for t in grid]
    return float(grid[int(np.argmax(acc))])


class FaceGate:
    """Is there a face at least ~65 % as wide as the crop? dlib's HOG detector on the crop
    drawn at ``side`` px, without upsampling (its smallest face is ~80 px), its detections
    counted from score ``threshold``; where the best one scores from ``second_opinion`` up to
    the threshold, OpenCV's Haar cascade decides (a face at least :data:`GATE_MIN_WIDTH` of the
    crop's width)."""

    def __init__(
        self, side: int = GATE_SIDE, threshold: float = GATE_THRESHOLD, second_opinion: float | None = None
    ) -> None:
        self.side = int(side)
        self.threshold = float(threshold)
        self.second_opinion = second_opinion
        self._lock = threading.Lock()  # dlib holds Python's lock while it computes
        self._detector: Any = None
        self._haar: Any = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) crops -> (N,) bool."""
        return np.array([b is not None for b in self.boxes(crops)], bool)

    def boxes(self, crops: np.ndarray) -> list[Any]:
        """uint8 (N, S, S, 3) crops -> each crop's largest face found on it shrunk to ``side``
        px (a dlib rectangle in the crop's pixels), or None where the gate stays shut."""
        size = (self.side, self.side)
        return [
            self.detect(np.asarray(Image.fromarray(c).resize(size, Image.Resampling.BILINEAR)), c.shape[1])
            for c in crops
        ]

    def region(self, img: Image.Image, crop: int) -> np.ndarray:
        """The face part's prepared crop of ``img`` (``crop`` px, :func:`prepare_image`) drawn
        at ``side`` px in one resample (the crop itself is never made)."""
        outer = round(resize_side(crop) * self.side / crop)
        return resized_crop(img, (outer, outer), self.side)

    def box(self, img: Image.Image, crop: int) -> Any:
        """The largest face on :meth:`region`, in the crop's pixels; None where the gate stays shut."""
        return self.detect(self.region(img, crop), crop)

    def best_score(self, img: Image.Image, crop: int) -> float:
        """The best detector score on :meth:`region` (-inf where nothing scores -1 or more):
        what :func:`choose_gate_threshold` takes."""
        _, scores = self.detections(self.region(img, crop), -1.0)
        return max(scores, default=-np.inf)

    def detections(self, small: np.ndarray, threshold: float) -> tuple[list[Any], list[float]]:
        """dlib's detections on ``small`` (no upsampling) scoring ``threshold`` or more, and their scores."""
        with self._lock:
            if self._detector is None:
                self._detector = frontal_face_detector()
            rects, scores, _ = self._detector.run(np.ascontiguousarray(small), 0, threshold)
        return list(rects), [float(v) for v in scores]

    def haar_faces(self, small: np.ndarray) -> list[Any]:
        """OpenCV's Haar cascade's frontal faces (``alt2``; its default steps: scale 1.1, 3
        neighbours) on ``small``, at least :data:`GATE_MIN_WIDTH` of its width, as dlib rectangles."""
        import cv2
        import dlib

        side = round(GATE_MIN_WIDTH * small.shape[1])
        gray = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
        with self._lock:
            if self._haar is None:
                cascades = cv2.data.haarcascades  # type: ignore[attr-defined]
                self._haar = cv2.CascadeClassifier(cascades + "haarcascade_frontalface_alt2.xml")
            found = self._haar.detectMultiScale(gray, 1.1, 3, minSize=(side, side))
        return [dlib.rectangle(int(x), int(y), int(x + w - 1), int(y + h - 1)) for x, y, w, h in found]

    def detect(self, small: np.ndarray, crop: int) -> Any:
        """The largest face on ``small`` (``side`` px) scaled to a ``crop`` px crop, or None."""
        floor = self.threshold if self.second_opinion is None else self.second_opinion
        rects, scores = self.detections(small, floor)
        box = largest([r for r, s in zip(rects, scores, strict=True) if s >= self.threshold])
        if box is None and rects:  # only a weak detection: the Haar cascade's opinion
            box = largest(self.haar_faces(small))
        return None if box is None else scale_box(box, crop / self.side)


@dataclass(frozen=True)
class Prepared:
    """One image's inputs to the default scorer: the photo part's, the gate's face box (None:
    no portrait) and, only where the gate opened, the face part's."""

    photo: np.ndarray
    box: Any = None
    face: np.ndarray | None = None


@dataclass(frozen=True)
class Batch:
    """Prepared images stacked: the photo inputs (N, ...), each image's face box or None, and
    the face inputs of the images with a box, in order ((K, S, S, 3); None when K = 0)."""

    photo: np.ndarray
    boxes: list[Any]
    faces: np.ndarray | None


@dataclass
class CombinedScorer:
    """The default scorer (module docstring); the same interface as :class:`Scorer`, plus
    :meth:`score_parts`. Its prepared input is a :class:`Prepared` (the gate runs while
    preparing). The face model is loaded when the gate first opens (or by :meth:`warm`): a
    folder without portraits never pays for it."""

    name: str
    version: str
    path: Path
    combination: Combination
    photo: Scorer
    face_path: Path
    gate: FaceGate = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    threads: int = 0
    _face: Scorer | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def face(self) -> Scorer:
        """The face part's scorer (loaded on first use)."""
        if self._face is None:
            with self._lock:
                if self._face is None:
                    face = load_scorer(self.face_path, threads=self.threads)
                    got = (face.input_size, face.resize_policy)
                    if got != self.combination.face_input:
                        raise ValueError(f"{self.path}: face_input {list(self.combination.face_input)} "
                                         f"but {self.face_path.name} takes {list(got)}")
                    self._face = face
        return self._face

    def warm(self) -> None:
        """Load the face part now (a server does, so that no request waits for it)."""
        _ = self.face

    @property
    def face_size(self) -> int:
        return self.combination.face_input[0]

    @property
    def input_size(self) -> int:
        return max(self.photo.input_size, self.face_size)

    @property
    def scale(self) -> tuple[float, float]:
        return self.combination.scale

    @property
    def decode_side(self) -> int:
        """The smallest side a JPEG may be decoded at: what both parts need (the photo part's
        native-scale crop needs more than the face part's squash)."""
        return max(self.photo.decode_side, decode_side(self.combination.face_input[1], self.face_size))

    @property
    def shared_input(self) -> bool:
        return (self.photo.input_size, self.photo.resize_policy) == self.combination.face_input

    def prepare(self, img: Image.Image) -> Prepared:
        """PIL image -> the photo model's input, the gate's box and, where it opened, the face
        model's input (the photo input itself when both models share the resize policy and size)."""
        photo_in = self.photo.prepare(img)
        box = self.gate.box(img, self.face_size)
        if box is None:
            return Prepared(photo_in)
        return Prepared(photo_in, box, photo_in if self.shared_input else prepare_image(img, self.face_size))

    def stack(self, prepared: list[Prepared]) -> Batch:
        """Prepared images -> a batch for :meth:`score`."""
        faces = [p.face for p in prepared if p.face is not None]  # exactly those with a box
        return Batch(np.stack([p.photo for p in prepared]), [p.box for p in prepared],
                     np.stack(faces) if faces else None)

    def score_parts(self, batch: Batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A batch -> ((N,) scores, {"photo": (N,), "face": (N,) NaN where no portrait})."""
        photo = self.photo.score(batch.photo).astype(np.float64)
        face = np.full(len(photo), np.nan)
        portrait = np.array([b is not None for b in batch.boxes], bool)
        if batch.faces is not None:  # the face part aligns the faces the gate found (no second detection)
            face[portrait] = self.face.score(batch.faces, [b for b in batch.boxes if b is not None])
        return self.combination.combine(photo, face), {"photo": photo, "face": face}

    def score(self, batch: Any) -> np.ndarray:
        return self.score_parts(batch)[0]

    def score_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.score(self.stack([self.prepare(i) for i in images]))


def load_combined(path: str | Path | None = None, *, threads: int = 0) -> CombinedScorer:
    """The combined scorer of a combination JSON (None: the bundled ``default.json``); its models
    are bundled names or paths (relative paths: from the JSON's folder)."""
    path = Path(path) if path is not None else COMBINATION_PATH
    comb = Combination.load(path)

    def model_path(ref: str) -> Path:
        local = path.parent / ref
        return local if local.suffix == ".onnx" and local.is_file() else resolve_model_path(ref)

    photo, face_path = load_scorer(model_path(comb.photo_model), threads=threads), model_path(comb.face_model)
    digest = hashlib.sha256(json.dumps(comb.to_json(), sort_keys=True).encode())
    digest.update(f"{photo.version}:{model_version(face_path)}".encode())
    meta = {"name": NAME, "photo_model": photo.name, "face_model": face_path.stem, "combination": path.name}
    gate = FaceGate(comb.gate_side, comb.gate_threshold, comb.gate_second_opinion)
    return CombinedScorer(NAME if path == COMBINATION_PATH else path.stem, digest.hexdigest()[:12], path,
                          comb, photo, face_path, gate, meta, threads)
