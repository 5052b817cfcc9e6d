"""Rating models on real human votes (pairwise-holidays, Chen et al., IEEE TIP 2017)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from doohable.ranking import bradley_terry, elo, metrics
from doohable.ranking.votes import read_votes_csv


def test_real_votes_load_and_bt_predicts_held_out_votes(shared_data: Path) -> None:
    comps, images, voters = read_votes_csv(shared_data / "pairwise-holidays" / "votes.csv")
    assert (len(comps), comps.n_voters) == (6682, 10) and comps.n_items <= 260
    fold = np.random.default_rng(0).permutation(len(comps)) % 5
    train, test = comps.subset(fold != 0), comps.subset(fold == 0)
    r = elo.ratings_from_comparisons(train)
    _, ll_elo = metrics.vote_prediction(elo.expected(r[test.left], r[test.right]))
    crowd = bradley_terry.fit(train, crowd=True)
    acc_bt, ll_bt = metrics.vote_prediction(crowd.win_probability(test.left, test.right, test.voter))
    # humans agree with the fitted model on about 3 votes in 4; BT's probabilities beat Elo's
    assert 0.70 < acc_bt < 0.80
    assert ll_bt < ll_elo < np.log(2)
    assert np.all(np.isfinite(crowd.ratings)) and crowd.reliability.min() < 0.8 < crowd.reliability.max()


def test_votes_csv_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("voter,winner\nann,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_votes_csv(bad)
    good = tmp_path / "good.csv"
    good.write_text("voter,winner,loser,created_at\nann,7,9,2026-01-01\nbob,9,8,2026-01-02\n")
    comps, images, voters = read_votes_csv(good)
    assert images.ids == [7, 8, 9] and voters.ids == ["ann", "bob"]
    assert comps.left.tolist() == [0, 2] and comps.right.tolist() == [2, 1]
    with pytest.raises(ValueError, match="unknown image id"):
        read_votes_csv(good, image_ids=[7, 9])
