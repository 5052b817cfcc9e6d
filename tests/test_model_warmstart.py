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
from doohable.ranking.votes import LogRow
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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_votes_move_the_head_as_far_as_the_prior_lets_them(settings: Settings, shared_data: Path) -> None:
    ids = vote_collection(settings, shared_data, n=12)
    images = _images(settings, ids)
    head = W.load_head("photo")
    feats, kept, errors = W.features(head, list(images.values()))
    assert kept == list(range(12)) and errors == []
    bundled = _scores("photo", images)
    z = (feats - head.mu) / head.sd
    assert np.allclose(1 + 4 * (z @ head.weight + head.bias), bundled, atol=1e-4)  # the graph's own head
    # every pair voted against the bundled model's order
    rows = [LogRow(n, i, j, i if bundled[i] < bundled[j] else j, None)
            for n, (i, j) in enumerate(((i, j) for i in range(12) for j in range(i + 1, 12)), 1)]
    votes = W.votes_of(rows, {i: i for i in range(12)})
    assert len(votes) == 66
    moved, shift = {}, {}
    for strength in (1.0, 1e3, 1e9):
        weight, info = W.fit_head(head, feats, votes, strength)
        moved[strength] = spearmanr(z @ weight, -bundled).statistic
        shift[strength] = np.abs(z @ (weight - head.weight)).max()
        assert info["strength"] == strength and info["votes"] == 66
        assert info["shift"] == pytest.approx(shift[strength])
    assert moved[1.0] > 0.9  # weak prior: the votes' order
    assert moved[1e9] < -0.99 and shift[1e9] < 1e-3  # overwhelming prior: the bundled head
    assert shift[1.0] > shift[1e3] > shift[1e9]
    _weight, chosen = W.fit_head(head, feats, votes)  # strength chosen by cross-validation
    assert chosen["strength"] in W.STRENGTHS and chosen["sharpness"] > 0


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
