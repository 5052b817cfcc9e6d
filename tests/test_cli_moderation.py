"""The CLI's moderation jobs run through the moderation service.

``doohable ingest --moderate`` and ``doohable score --ingested`` call
:func:`doohable.moderation_service.moderate_ingested` once, and show what only that service
does: every image checked by the NSFW gate, scores stored with the model version, the
policy's audit rows (``auto:threshold``, ``auto:nsfw``) and the auto-approve threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from doohable import moderation, moderation_service
from doohable.cli import app
from doohable.config import Settings, get_settings
from doohable.ingest import ingest_inputs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image, Score
from scoring_fixtures import brightness_model, jpeg_of_gray

# flat grays: 30 scores ~1.5 (pending), 120 ~2.9 with NSFW probability ~0.2 (flagged at 0.1),
# 250 ~4.9 (approved at 3.0)
LEVELS = (30, 120, 250)


@pytest.fixture
def configured(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with the brightness scorer, threshold 3.0 and a moderator's NSFW threshold 0.1."""
    monkeypatch.setenv("DOOHABLE_MODEL", str(brightness_model(tmp_path / "brightness.onnx")))
    monkeypatch.setenv("DOOHABLE_AUTO_APPROVE_THRESHOLD", "3.0")
    get_settings.cache_clear()
    configured = get_settings()
    with session_scope(get_engine(configured.resolved_database_url)) as s:
        moderation.set_policy(s, nsfw_threshold=0.1)
    return configured


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for level in LEVELS:
        (d / f"g{level}.jpg").write_bytes(jpeg_of_gray(level))
    return d


@pytest.fixture
def service_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[int] | None]:
    """The image ids of each call of the service's ``moderate_ingested`` (None: all)."""
    calls: list[list[int] | None] = []
    real = moderation_service.moderate_ingested

    def spy(*args: Any, **kwargs: Any) -> Any:
        ids = args[3] if len(args) > 3 else kwargs.get("image_ids")
        calls.append(None if ids is None else sorted(ids))
        return real(*args, **kwargs)

    monkeypatch.setattr(moderation_service, "moderate_ingested", spy)
    return calls


def _run(*args: str) -> dict[str, object]:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert isinstance(out, dict)
    return out


def _check_moderated(settings: Settings, report: object) -> list[int]:
    """The service's work on the three grays, as the report and the tables show it."""
    assert isinstance(report, dict)
    assert set(report) == {"model", "version", "scored", "errors", "approved", "flagged", "pending"}
    assert (report["model"], report["scored"], report["errors"]) == ("brightness", 3, [])
    assert (report["approved"], report["flagged"], report["pending"]) == (1, 1, 1)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        images = {Path(str(i.sources[0].uri)).stem: i for i in s.scalars(select(Image))}
        assert all(i.nsfw is not None for i in images.values())  # the gate ran on each
        rules = {d.image_id: d.rule for d in s.scalars(select(Decision))}
        scored = s.execute(select(Score.image_id, Score.model_version)).all()
        status = {name: i.status for name, i in images.items()}
        ids = sorted(i.id for i in images.values())
        by_name = {name: i.id for name, i in images.items()}
    assert {v for _, v in scored} == {report["version"]} and len(scored) == 3
    assert status == {"g30": "pending", "g120": "pending", "g250": "approved"}
    assert rules == {by_name["g120"]: moderation.RULE_NSFW, by_name["g250"]: moderation.RULE_THRESHOLD}
    return ids


def test_ingest_moderate_goes_through_the_service(
    configured: Settings, folder: Path, service_calls: list[list[int] | None]
) -> None:
    out = _run("ingest", str(folder), "--moderate")
    assert out["added"] == 3
    ids = _check_moderated(configured, out["moderation"])
    assert service_calls == [ids]  # once, for the images this ingest stored


def test_score_ingested_goes_through_the_service(
    configured: Settings, folder: Path, service_calls: list[list[int] | None]
) -> None:
    assert ingest_inputs([str(folder)], configured).added == 3
    _check_moderated(configured, _run("score", "--ingested"))
    assert service_calls == [None]  # once, for every stored image
