"""The Ray Data backend, on a local Ray: same scores as the local pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # the ray extra; scripts/setup.sh dev installs it

from doohable.batch import score_paths, score_paths_ray
from doohable.model.runtime import load_scorer
from scoring_fixtures import brightness_model, jpeg_of_gray


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_scores_equal_local_pipeline(tmp_path: Path, local_ray: None) -> None:
    model = brightness_model(tmp_path / "brightness.onnx")
    files = []
    for k, lv in enumerate((10, 60, 110, 160, 210, 250)):
        f = tmp_path / f"g{k}.jpg"
        f.write_bytes(jpeg_of_gray(lv, size=(90 + k, 70)))
        files.append(f)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    files.append(bad)
    local = {r.path: r for r in score_paths(files, load_scorer(str(model)))}
    remote = {r.path: r for r in score_paths_ray(files, str(model), batch_size=3, concurrency=2)}
    assert set(remote) == set(local) == {str(f) for f in files}
    for path, r in local.items():
        if r.score is None:
            assert remote[path].score is None and remote[path].error == r.error
        else:
            assert remote[path].score == pytest.approx(r.score, abs=1e-6)
            assert remote[path].sha256 == r.sha256
