"""``doohable retrain``: votes -> a new scorer -> compared on held-out votes -> promoted if better."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from doohable.cli import app
from doohable.model.retrain import agreement, split_votes
from doohable.ranking.votes import LogRow
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Score
from doohable.voting.prior import prior_model
from loop_support import vote_collection

pytestmark = pytest.mark.slow  # a whole retrain per test: the whole suite runs them


def test_split_and_agreement() -> None:
    rows = [LogRow(i, 1, 2, 1 if i % 3 else None, None) for i in range(1, 201)]
    train, test = split_votes(rows, 0.25, 0)
    assert len(train) + len(test) == 200 and all(r.winner_id is not None for r in test)
    assert 15 < len(test) < 55 and not {r.id for r in train} & {r.id for r in test}
    assert agreement({1: 2.0, 2: 1.0}, test) == (1.0, len(test))
    assert agreement({1: 1.0, 2: 1.0}, test)[0] == 0.5  # ties count half
    assert agreement({}, test) == (None, 0)


def test_retrain_promotes_over_a_model_that_cannot_load(settings, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = vote_collection(settings, shared_data)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    target = tmp_path / "in-house.onnx"
    res = CliRunner().invoke(app, ["retrain", "--current", str(broken), "--promote-to", str(target),
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert "not a loadable ONNX model" in doc["current"]["error"]
    assert doc["current"]["pairwise_accuracy"] is None
    assert doc["votes"]["counted"] == len(ids) * (len(ids) - 1) // 2 and doc["votes"]["measured"] > 0
    assert doc["new"]["pairwise_accuracy"] > 0.5 and doc["better"] and doc["promoted"] == str(target)
    assert target.is_file() and doc["rescored"]["scored"] == len(ids)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        model = prior_model(s)
        assert model is not None and model[0] == "in-house"  # its scores are now the prior
        n = s.scalar(select(func.count()).select_from(Score).where(Score.model == model[0],
                                                                     Score.model_version == model[1]))
        assert n == len(ids)
    again = CliRunner().invoke(app, ["retrain", "--current", str(target), "--no-promote", "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["current"]["pairwise_accuracy"] == doc["new"]["pairwise_accuracy"]  # same split, same model
    assert not np.isnan(second["new"]["pairwise_accuracy"]) and second["promoted"] is None


def test_retrain_on_an_empty_log_is_a_clear_error(settings) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["retrain", "--json"])
    assert res.exit_code == 2 and "retraining needs at least 10" in res.output


def test_retrain_measures_the_served_default_and_is_reproducible(settings, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    vote_collection(settings, shared_data)
    docs = []
    for current in ([], ["--current", "default"]):  # no --current: the settings' model, the bundled default
        res = CliRunner().invoke(app, ["retrain", *current, "--seed", "3", "--no-promote", "--json"])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for doc in docs:
        assert doc["current"]["model"] == "default" and "error" not in doc["current"]
        assert doc["current"]["pairwise_accuracy"] > 0.5  # the real default, not a fallback to chance
    assert docs[0]["current"] == docs[1]["current"]
    assert docs[0]["new"] == docs[1]["new"]  # same seed, same split and same model
    assert not (settings.home / "models" / "in-house.onnx").exists()
    assert [p.name for p in (settings.home / "models").glob("*.onnx")] == ["candidate.onnx"]


def test_retrain_with_an_unknown_current_model_stops_before_training(settings) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["retrain", "--current", "defualt", "--json"])
    assert res.exit_code == 2 and "unknown model 'defualt'" in res.output and "default" in res.output
    assert not (settings.home / "models" / "candidate.onnx").exists()
