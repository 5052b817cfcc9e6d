"""doohable.datasets: one definition of each shared data path, overridable by the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from doohable import datasets


def test_shared_data_defaults_to_the_folder_next_to_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(datasets.SHARED_DATA_ENV, raising=False)
    root = datasets.project_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert datasets.shared_data() == root.parent / "shared" / "data"


def test_environment_variable_moves_every_data_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(datasets.SHARED_DATA_ENV, str(tmp_path))
    assert datasets.shared_data() == tmp_path
    assert datasets.scut_fbp5500() == tmp_path / "scut-fbp5500"
    assert datasets.ava() == tmp_path / "ava"
    assert datasets.pairwise_holidays() == tmp_path / "pairwise-holidays"
    assert datasets.live_challenge() == tmp_path / "live-challenge"


def test_the_data_sets_are_where_the_paths_say(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.SHARED_DATA_ENV, str(shared_data))
    assert (datasets.scut_fbp5500() / "labels.csv").is_file()
    assert (datasets.ava() / "AVA_subset.txt").is_file()
    assert (datasets.pairwise_holidays() / "votes.csv").is_file()
    assert datasets.live_challenge().is_dir()
