"""``--from-model``: a bundled photo model's head fitted to the votes with shrinkage toward it.
Votes without information leave it exactly as shipped; votes move it toward their order."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from doohable.cli import app
from doohable.config import Settings
from doohable.model import warmstart as W
from doohable.model.runtime import load_scorer
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image as ImageRow
from doohable.store.models import Vote
from loop_support import vote_collection


def _scores(model: str | Path, images: dict[int, bytes]) -> np.ndarray:
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images.values()]
    return load_scorer(model).score_images(pil).astype(np.float64)


def _images(settings: Settings, ids: list[int]) -> dict[int, bytes]:
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return {i: blobs.get(s.get(ImageRow, i).sha256) for i in ids}  # type: ignore[union-attr]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_votes_without_information_give_the_bundled_head(settings: Settings, shared_data: Path,
                                                         tmp_path: Path) -> None:
    ids = vote_collection(settings, shared_data, n=8)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        for v in s.query(Vote):
            v.winner_id = None  # every vote a tie: no preference at all
    images = _images(settings, ids)
    for ref in ("photo", "default"):  # default: its photo part (other = identity)
        out = tmp_path / f"{ref}.onnx"
        args = ["train", "--from-db", "--from-model", ref, "--out", str(out), "--json"]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout.strip().splitlines()[-1])
        assert doc["model"] == str(out) and doc["metrics"]["votes"] == 0 and doc["metrics"]["n_images"] == 8
        assert np.array_equal(_scores(out, images), _scores("photo", images))


def _photo_features(shared_data: Path, n: int) -> tuple[W.BundledHead, np.ndarray, np.ndarray]:
    """The photo model's head, features of n SCUT images and their standardised features."""
    head = W.load_head("photo")
    names = sorted((shared_data / "scut-fbp5500" / "images").iterdir())[:n]
    feats, kept, errors = W.features(head, [p.read_bytes() for p in names])
    assert kept == list(range(n)) and errors == []
    return head, feats, (feats - head.mu) / head.sd


def _votes_by(target: np.ndarray) -> W.Votes:
    """One vote per pair, for the higher target."""
    n = len(target)
    pairs = [(i, j) if target[i] > target[j] else (j, i) for i in range(n) for j in range(i + 1, n)]
    return W.Votes(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))


def test_votes_move_the_head_as_far_as_the_prior_lets_them(shared_data: Path) -> None:
    head, feats, z = _photo_features(shared_data, 12)
    u0 = z @ head.weight
    other = z @ np.random.default_rng(0).normal(size=z.shape[1])
    target = u0 / u0.std() + other / other.std()  # the voters half follow the bundled model
    votes = _votes_by(target)
    assert len(votes) == 66

    def agree(weight: np.ndarray) -> float:
        return float(spearmanr(z @ weight, target).statistic)

    shift = {}
    for strength in (1.0, 1e3, 1e9):
        weight, info = W.fit_head(head, feats, votes, strength)
        shift[strength] = info["shift"]
        assert info["strength"] == strength and info["votes"] == 66 and info["sharpness"] > 0
        assert info["shift"] == pytest.approx(np.abs(z @ (weight - head.weight)).max())
        if strength == 1.0:
            assert agree(weight) > max(0.95, agree(head.weight) + 0.1)  # weak prior: the votes' order
        if strength == 1e9:  # overwhelming prior: the bundled order
            assert spearmanr(z @ weight, u0).statistic > 0.99
    assert shift[1.0] > shift[1e3] > shift[1e9]
    _weight, chosen = W.fit_head(head, feats, votes)  # strength chosen by cross-validation
    assert chosen["strength"] in W.STRENGTHS


def test_a_model_the_voters_contradict_loses_its_weight(shared_data: Path) -> None:
    head, feats, z = _photo_features(shared_data, 10)
    u0 = z @ head.weight
    votes = _votes_by(-u0)  # always for the image the bundled model scores lower
    weight, info = W.fit_head(head, feats, votes, strength=1e9)
    assert info["sharpness"] == 0.0  # the voters do not follow it at all
    assert np.abs(weight).max() < 1e-6 * np.abs(head.weight).max()  # nothing of it is left
    weight, _ = W.fit_head(head, feats, votes, strength=1.0)
    assert spearmanr(z @ weight, -u0).statistic > 0.9  # the votes' order


def test_from_model_refuses_what_it_cannot_start_from(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    alone = runner.invoke(app, ["train", "--from-model", "photo", "--json"])
    assert alone.exit_code == 2 and "needs --from-db" in alone.output
    whole = runner.invoke(app, ["train", "--from-db", "--finetune", "--from-model", "photo", "--json"])
    assert whole.exit_code == 2 and "head only" in whole.output
    empty = runner.invoke(app, ["train", "--from-db", "--from-model", "photo", "--json"])
    assert empty.exit_code == 2 and "no votes" in empty.output
    with pytest.raises(ValueError, match="takes a photo model"):
        W.load_head("selfie")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        W.load_head(str(broken))
