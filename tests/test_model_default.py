"""The default scorer: the combination of parts, the face gate, its fitting, and its parts in
the CLI's JSON lines. The photo part is a stand-in here (a tiny exported scorer of brightness),
the face part the bundled ``selfie-fast``; the gate is dlib's detector on real photos."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skd

from doohable.model.default import (
    Combination,
    FaceGate,
    choose_gate_threshold,
    fit_combination,
    load_combined,
)
from doohable.model.load import default_name, load_any
from doohable.model.preprocess import prepare_image
from doohable.model.runtime import BUNDLED_DIR, Scorer
from scoring_fixtures import expected_score, jpeg_of_gray, standin_combination

DOOHABLE = [str(Path(sys.executable).with_name("doohable"))]


def portrait() -> Image.Image:
    """The astronaut's face filling the frame."""
    return Image.fromarray(skd.astronaut()[40:220, 150:330])


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def combination(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin_combination(tmp_path_factory.mktemp("default"))


def test_combine_applies_the_face_part_only_where_there_is_one() -> None:
    comb = Combination(portrait=(0.5, 0.6, 0.3), other=(0.1, 0.9))
    out = comb.combine(np.array([3.0, 3.0, 9.0]), np.array([np.nan, 4.0, np.nan]))
    assert out.tolist() == pytest.approx([0.1 + 0.9 * 3.0, 0.5 + 0.6 * 4.0 + 0.3 * 3.0, 5.0])  # clipped


def test_combination_round_trips_and_refuses_bad_files(tmp_path: Path) -> None:
    comb = Combination(portrait=(0.1, 0.8, 0.2), fitted={"data": "x"})
    assert Combination.load(comb.save(tmp_path / "c.json")) == comb
    (tmp_path / "bad.json").write_text('{"format": "doohable-default-1", "portrait": [1]}')
    (tmp_path / "other.json").write_text("[1, 2]")
    for name in ("bad.json", "other.json", "missing.json"):
        with pytest.raises(ValueError, match=name):
            Combination.load(tmp_path / name)


def test_bundled_combination_is_readable_and_names_the_parts() -> None:
    comb = Combination.load(BUNDLED_DIR / "default.json")
    assert (comb.photo_model, comb.face_model) == ("photo", "selfie")
    expected = "default" if (BUNDLED_DIR / "photo.onnx").is_file() else "selfie"
    assert default_name() == expected


def test_fit_recovers_the_coefficients_of_each_kind_of_image() -> None:
    rng = np.random.default_rng(0)
    photo = rng.uniform(1, 5, 400)
    face = np.where(rng.random(400) < 0.5, rng.uniform(1, 5, 400), np.nan)
    y = np.where(np.isnan(face), 0.3 + 0.8 * photo, 0.2 + 0.7 * np.nan_to_num(face) + 0.1 * photo)
    noisy = y + rng.normal(0, 0.01, 400)
    comb = fit_combination(photo, face, noisy, Combination(), fitted={"data": "synthetic"})
    assert comb.portrait == pytest.approx((0.2, 0.7, 0.1), abs=0.02)
    assert comb.other == pytest.approx((0.3, 0.8), abs=0.02)
    assert comb.fitted["portraits"] == int((~np.isnan(face)).sum()) and comb.fitted["data"] == "synthetic"


def test_gate_opens_on_a_portrait_that_fills_the_frame_only() -> None:
    images = (portrait(), Image.fromarray(skd.astronaut()), Image.fromarray(skd.chelsea()))
    crops = np.stack([prepare_image(i, 224) for i in images])
    gate = FaceGate()
    assert gate(crops).tolist() == [True, False, False]
    # straight from the image at 112 px, as the scorer runs it: the same decisions, the same face
    boxes = [gate.box(i, 224) for i in images]
    assert [b is not None for b in boxes] == [True, False, False]
    found = gate.boxes(crops[:1])[0]
    assert max(abs(boxes[0].left() - found.left()), abs(boxes[0].top() - found.top()),
               abs(boxes[0].right() - found.right()), abs(boxes[0].bottom() - found.bottom())) <= 4


def test_gate_threshold_opens_exactly_where_the_best_detection_scores_enough() -> None:
    # the astronaut's face turned and cut more and more: detector scores from high to none
    base = portrait()
    images = [base.rotate(a, resample=Image.Resampling.BILINEAR) for a in (0, 10, 20, 30, 45)]
    images += [base.crop((0, 0, 180, w)).resize((180, 180)) for w in (120, 90)]
    gate = FaceGate()
    best = np.array([gate.best_score(i, 224) for i in images])
    assert best.max() > 0.5 and (best < 0).any()  # both sides of dlib's own threshold
    for t in (0.0, -0.2, -0.5):
        strict = FaceGate(threshold=t)
        assert [strict.box(i, 224) is not None for i in images] == (best >= t).tolist()


def test_gate_asks_the_haar_cascade_only_about_weak_detections() -> None:
    base = portrait()
    small = Image.new("RGB", (180, 180))
    small.paste(base.resize((135, 135)), (22, 22))  # the face zoomed out: a weak detection
    too_weak = base.crop((0, 0, 100, 180)).resize((180, 180))  # half the face, squeezed
    gate = FaceGate(threshold=-0.2, second_opinion=-0.6)
    best = [gate.best_score(i, 224) for i in (base, small, too_weak)]
    assert best[0] >= -0.2 > best[1] >= -0.6 > best[2]
    assert gate.box(base, 224) is not None and gate._haar is None  # a clear face: never asked
    assert gate.box(Image.fromarray(skd.chelsea()), 224) is None and gate._haar is None  # nothing found
    assert gate.box(too_weak, 224) is None and gate._haar is None  # under the floor: not asked
    assert gate.box(small, 224) is None and gate._haar is not None  # asked; it sees no face that wide


def test_the_haar_cascade_opens_the_gate_on_a_face_hog_scores_weakly(shared_data: Path) -> None:
    face = Image.open(shared_data / "scut-fbp5500" / "images" / "AF1678.jpg").convert("RGB")
    assert -0.6 <= FaceGate().best_score(face, 224) < -0.2
    assert FaceGate(threshold=-0.2).box(face, 224) is None
    box = FaceGate(threshold=-0.2, second_opinion=-0.6).box(face, 224)
    assert box is not None and box.width() >= 0.65 * 224


def test_gate_threshold_is_chosen_by_balanced_accuracy_and_kept_in_the_json(tmp_path: Path) -> None:
    faces = np.array([1.0, 0.5, -0.15, -0.15, -np.inf])
    others = np.array([-np.inf] * 10 + [-0.45, 0.3])
    # balanced accuracy: 0 and -0.1: (2/5 + 11/12) / 2; -0.2 to -0.4: (4/5 + 11/12) / 2, the best;
    # -0.5 and -0.6: (4/5 + 10/12) / 2. Of the equals, the strictest
    assert choose_gate_threshold(faces, others) == -0.2
    comb = Combination(gate_threshold=-0.3, gate_second_opinion=-0.5)
    assert Combination.load(comb.save(tmp_path / "c.json")) == comb
    doc = json.loads((tmp_path / "c.json").read_text())
    del doc["gate_threshold"], doc["gate_second_opinion"]  # a file from before both: dlib's 0, HOG alone
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = Combination.load(tmp_path / "old.json")
    assert (old.gate_threshold, old.gate_second_opinion) == (0.0, None)
    with pytest.raises(ValueError, match="gate_threshold"):
        Combination(gate_threshold=-3.0)
    with pytest.raises(ValueError, match="gate_second_opinion"):
        Combination(gate_threshold=-0.3, gate_second_opinion=-0.1)  # above the threshold


def test_a_large_jpeg_is_decoded_large_enough_for_the_photo_part() -> None:
    # the photo part keeps a 500 px short side: a 1080x1350 JPEG must be decoded at 1/2 (540 px),
    # not at the 1/4 (270 px) the face part alone would allow, or its crop is an upsampled blur
    from doohable.batch import prepare_bytes
    from doohable.images import decode

    scorer = load_any("default", threads=1)
    assert not isinstance(scorer, Scorer) and scorer.decode_side == 500
    img = Image.fromarray(skd.coffee()).resize((1080, 1350), Image.Resampling.LANCZOS)
    data = jpeg(img)
    full = scorer.photo.prepare(decode(data).image).astype(int)
    got = prepare_bytes(data, scorer).photo.astype(int)
    quarter = scorer.photo.prepare(decode(data, draft=(256, 256)).image).astype(int)
    assert np.abs(got - full).mean() < 1.5 < np.abs(quarter - full).mean()


def test_combined_scorer_gives_the_parts_and_their_combination(combination: Path) -> None:
    scorer = load_any(combination, threads=1)
    assert not isinstance(scorer, Scorer) and scorer.name == "mine" and len(scorer.version) == 12
    gray = Image.new("RGB", (300, 200), (120,) * 3)
    batch = scorer.stack([scorer.prepare(i) for i in (portrait(), gray)])
    scores, parts = scorer.score_parts(batch)
    assert batch.faces is not None and len(batch.faces) == 1  # only the portrait's face input is made
    face_alone = scorer.face.score(batch.faces)[0]
    assert parts["photo"][1] == pytest.approx(expected_score(120), abs=0.02)
    assert np.isnan(parts["face"][1]) and parts["face"][0] == pytest.approx(face_alone, abs=1e-5)
    assert scores[0] == pytest.approx(0.5 + 0.6 * face_alone + 0.3 * parts["photo"][0], abs=1e-4)
    assert scores[1] == pytest.approx(0.1 + 0.9 * parts["photo"][1], abs=1e-4)
    # another combination of the same models is another version
    other = Combination.load(combination)
    moved = Combination(other.photo_model, other.face_model, portrait=(0.0, 1.0, 0.0))
    assert load_combined(moved.save(combination.with_name("moved.json"))).version != scorer.version


def test_score_cli_lines_carry_parts_and_skip_what_is_not_an_image(combination: Path, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "face.jpg").write_bytes(jpeg(portrait()))
    (d / "gray.jpg").write_bytes(jpeg_of_gray(200))
    (d / "text.jpg").write_text("not an image at all")
    (d / "cut.jpg").write_bytes(jpeg_of_gray(90)[:200])
    env_home = {"DOOHABLE_HOME": str(tmp_path / "home")}
    out = subprocess.run([*DOOHABLE, "score", str(d), "--json", "--no-store", "--model", str(combination)],
                         capture_output=True, text=True, check=True, env={**os.environ, **env_home})
    lines = {Path(x["path"]).name: x for x in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"face.jpg", "gray.jpg", "text.jpg", "cut.jpg"}
    assert "error" in lines["text.jpg"] and "error" in lines["cut.jpg"]
    face, gray = lines["face.jpg"], lines["gray.jpg"]
    assert set(face) == {"path", "score", "parts", "model", "version"} and face["model"] == "mine"
    assert face["parts"]["face"] is not None and gray["parts"]["face"] is None
    assert gray["score"] == pytest.approx(0.1 + 0.9 * gray["parts"]["photo"], abs=1e-4)


def test_face_part_loads_only_when_a_portrait_comes(combination: Path) -> None:
    scorer = load_combined(combination, threads=1)
    gray = Image.new("RGB", (300, 200), (90,) * 3)
    scores, parts = scorer.score_parts(scorer.stack([scorer.prepare(gray)]))
    assert scorer._face is None and np.isnan(parts["face"][0])
    scorer.score_parts(scorer.stack([scorer.prepare(portrait())]))
    assert scorer._face is not None and scorer.face.name == "selfie-fast"


def test_a_face_model_that_takes_another_input_is_refused(tmp_path: Path) -> None:
    standin_combination(tmp_path)
    comb = Combination.load(tmp_path / "mine.json")
    wrong = Combination(comb.photo_model, comb.face_model, face_input=(160, comb.face_input[1]))
    scorer = load_combined(wrong.save(tmp_path / "wrong.json"), threads=1)
    with pytest.raises(ValueError, match="face_input"):
        scorer.warm()
