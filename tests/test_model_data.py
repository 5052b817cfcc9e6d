"""Data loaders on the real formats: SCUT-FBP5500, AVA.txt, images, and in-house labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from doohable.model.data import (
    LabelError,
    counts_to_distribution,
    distribution_mean_std,
    load_ava,
    load_images,
    load_scut,
    vote_pairs_from_db,
)
from doohable.model.heads import create_head
from doohable.model.losses import emd_loss


def test_scut_labels_and_fixed_folds(shared_data: Path) -> None:
    d = load_scut(shared_data / "scut-fbp5500")
    assert len(d) == 4400
    assert sorted(set(d.folds.tolist())) == [1, 2, 3, 4]
    assert sorted(set(d.groups)) == ["AF", "AM", "CF", "CM"]
    assert d.scores.min() >= 1.0 and d.scores.max() <= 5.0
    assert all(Path(p).is_file() for p in d.paths[:20])
    small = load_scut(shared_data / "scut-fbp5500", limit=3)
    assert len(small) == 12 and sorted(small.folds.tolist()) == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3


def test_bad_label_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,score,subset,fold\nAF1.jpg,3.1,AF,1\nAF2.jpg,oops,AF,2\n")
    with pytest.raises(LabelError, match=r"labels.csv:3: bad score"):
        load_scut(tmp_path)
    (tmp_path / "labels.csv").write_text("image,score,subset,fold\nAF1.jpg,7,AF,1\n")
    with pytest.raises(LabelError, match=r"labels.csv:2: score 7.0 outside 1..5"):
        load_scut(tmp_path)
    (tmp_path / "labels.csv").write_text("name,score\nAF1.jpg,3\n")
    with pytest.raises(LabelError, match=r"labels.csv:1: header"):
        load_scut(tmp_path)


@pytest.mark.slow
def test_ava_real_file(shared_data: Path) -> None:
    ava = load_ava(shared_data / "ava" / "AVA_subset.txt")
    assert len(ava.image_ids) == 76944 and ava.counts.shape == (76944, 10)
    dist = ava.distributions()
    assert np.allclose(dist.sum(1), 1.0)
    mean, std = distribution_mean_std(dist)
    assert 3.0 < mean.mean() < 7.0 and 1.0 < std.mean() < 2.0  # AVA: means near 5.4, std near 1.4
    # the two labelled images shipped with the subset
    labelled = {int(i.stem) for i in (shared_data / "ava" / "images").glob("*.jpg")} & set(
        ava.image_ids.tolist()
    )
    assert labelled == {42039, 42040}
    # NIMA head and EMD on real histograms: EMD to itself is 0, to a shifted histogram it grows
    p = torch.from_numpy(dist[:256])
    shifted = torch.roll(p, 1, dims=1)
    assert float(emd_loss(p, p)) == 0.0 and float(emd_loss(p, shifted)) > 0.05
    head = create_head("nima", 4, (1.0, 10.0))
    assert np.allclose(head.to_score(p.float()).numpy(), mean[:256], atol=1e-4)


def test_ava_bad_line_is_named(tmp_path: Path) -> None:
    f = tmp_path / "AVA.txt"
    f.write_text("1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\n2 953958 0 4 x 25 34 20 13 4 1 2 0 0 1396\n")
    with pytest.raises(LabelError, match=r"AVA.txt:2: non-integer"):
        load_ava(f)
    f.write_text("1 953619 0 1 5\n")
    with pytest.raises(LabelError, match=r"AVA.txt:1: expected 15 fields"):
        load_ava(f)
    assert counts_to_distribution(np.array([1, 3])).tolist() == [0.25, 0.75]


def test_corrupt_image_is_reported_and_skipped(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:60])
    arr = load_images([str(good), str(bad), str(tmp_path / "missing.jpg")], 32)
    assert arr.pixels.shape == (1, 32, 32, 3) and arr.kept.tolist() == [0]
    assert [e["source"] for e in arr.errors] == [str(bad), str(tmp_path / "missing.jpg")]
    assert [int(v) for v in arr.pixels[0, 16, 16]] == pytest.approx([200, 10, 10], abs=3)


def test_vote_pairs_from_db_skip_undone_votes_and_deleted_images(settings: object) -> None:
    from doohable.store.db import get_engine, session_scope
    from doohable.store.models import Image as ImageRow
    from doohable.store.models import Vote
    from doohable.store.users import add_user
    from voting_support import delete_image_unchecked

    engine = get_engine(settings.resolved_database_url)  # type: ignore[attr-defined]
    with session_scope(engine) as s:
        user, _ = add_user(s, "ann")
        imgs = [
            ImageRow(sha256=f"{i:064x}", phash="0" * 16, width=1, height=1, format="PNG", size_bytes=1)
            for i in range(3)
        ]
        s.add_all(imgs)
        s.flush()
        a, b, c = (i.id for i in imgs)
        v1 = Vote(voter_id=user.id, left_id=a, right_id=b, winner_id=a)
        v2 = Vote(voter_id=user.id, left_id=b, right_id=c, winner_id=c)
        s.add_all([v1, v2])
        s.flush()
        s.add(Vote(voter_id=user.id, left_id=b, right_id=c, winner_id=None, undoes_vote_id=v2.id))
        s.add(Vote(voter_id=user.id, left_id=c, right_id=a, winner_id=a))
        s.flush()
        pairs = vote_pairs_from_db(s)
    assert list(zip(pairs.winners.tolist(), pairs.losers.tolist(), strict=True)) == [(a, b), (a, c)]
    delete_image_unchecked(engine, b)  # deleted outside doohable: its vote is left out
    with session_scope(engine) as s:
        pairs = vote_pairs_from_db(s)
    assert list(zip(pairs.winners.tolist(), pairs.losers.tolist(), strict=True)) == [(a, c)]


def _images_and_voter(s: object, n: int) -> tuple[int, list[int]]:
    from doohable.store.models import Image as ImageRow
    from doohable.store.users import add_user

    user, _ = add_user(s, "bob")  # type: ignore[arg-type]
    imgs = [ImageRow(sha256=f"{i + 100:064x}", phash="0" * 16, width=1, height=1, format="PNG", size_bytes=1)
            for i in range(n)]
    s.add_all(imgs)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return user.id, [i.id for i in imgs]


@pytest.mark.parametrize("method", ["bt", "elo"])
def test_ratings_from_db_use_votes_cast_after_a_rebuild(settings: object, method: str) -> None:
    from doohable import voting
    from doohable.model.data import ratings_from_db
    from doohable.store.db import get_engine, session_scope

    engine = get_engine(settings.resolved_database_url)  # type: ignore[attr-defined]
    with session_scope(engine) as s:
        voter, (a, b, c) = _images_and_voter(s, 3)
    for left, right, winner in [(a, b, a), (a, b, a)]:
        with session_scope(engine) as s:
            pair = _pair(s, voter, left, right)
            voting.record_vote(s, voter, pair, winner)
    with session_scope(engine) as s:
        voting.rebuild_ratings(s)
        before = ratings_from_db(s, method)
    assert len(before) == 2  # c has no votes yet
    for _ in range(3):  # after the rebuild: c beats a, three times
        with session_scope(engine) as s:
            voting.record_vote(s, voter, _pair(s, voter, c, a), c)
    with session_scope(engine) as s:
        after = ratings_from_db(s, method)
    shas = {i: f"blob:{k + 100:064x}" for k, i in enumerate((a, b, c))}
    assert after.paths == [shas[a], shas[b], shas[c]]
    assert after.scores[2] == after.scores.max() == 5.0  # the new votes count


def _pair(s: object, voter: int, left: int, right: int) -> str:
    """A pair token for a chosen pair (what next_pair stores), so that a test picks the pair."""
    import datetime as dt

    from doohable.store.models import PairToken

    token = f"t-{left}-{right}-{dt.datetime.now().timestamp()}"
    s.add(PairToken(token=token, voter_id=voter, left_id=left, right_id=right,  # type: ignore[attr-defined]
                    issued_at=dt.datetime.now(dt.UTC)))
    s.flush()  # type: ignore[attr-defined]
    return token


def test_ratings_from_db_on_an_empty_log_is_a_clear_error(settings: object) -> None:
    from doohable.model.data import ratings_from_db
    from doohable.store.db import get_engine, session_scope

    with session_scope(get_engine(settings.resolved_database_url)) as s:  # type: ignore[attr-defined]
        _images_and_voter(s, 3)
        with pytest.raises(ValueError, match="no images have 1 or more counted votes"):
            ratings_from_db(s)
