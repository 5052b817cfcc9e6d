"""Atheris harness for the vote and pair parsing: everything a voter (or Slack) sends.

Each input drives one of:

0. the JSON body of ``POST /api/v1/votes`` (``VoteIn``) and, when it parses, the voting
   service with that token and winner;
1. a Slack button value (``SlackVoting.record``), which must answer a note, never raise;
2. a signed image token (``verify_image_token``);
3. a short sequence of operations by two voters (next pair, vote left/right/tie/other id,
   reuse a token, skip, undo), after which the stored Elo ratings must equal a replay of
   the log.

Expected refusals: ``VotingError`` (and subclasses), pydantic ``ValidationError`` and
``SignatureError``. Anything else is a crash. The store is a SQLite file in a temporary
folder; every input's writes are rolled back.

    .venv/bin/python fuzz/fuzz_votes.py -runs=3000
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import atheris
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

with atheris.instrument_imports(include=["doohable"]):
    from doohable import voting
    from doohable.api.routers.votes import VoteIn
    from doohable.config import Settings
    from doohable.ranking import elo
    from doohable.signing import SignatureError, verify_image_token
    from doohable.slack.app import SlackVoting
    from doohable.store.db import get_engine, session_scope
    from doohable.store.models import Image, Rating
    from doohable.store.users import add_user

HOME = Path(tempfile.mkdtemp(prefix="doohable-fuzz-votes-"))
SETTINGS = Settings(home=HOME, database_url=f"sqlite:///{HOME / 'fuzz.db'}", secret_key="fuzz-secret")
ENGINE = get_engine(SETTINGS.resolved_database_url)
with session_scope(ENGINE) as _s:
    for _k in range(4):
        _s.add(Image(sha256=f"{_k:064x}", phash=f"{_k:016x}", width=8, height=8, format="JPEG", size_bytes=1))
    VOTERS = [add_user(_s, f"fuzz{k}", "voter")[0].id for k in range(2)]
SLACK = SlackVoting(SETTINGS)


def _vote_body(session: Session, raw: bytes) -> None:
    try:
        body = VoteIn.model_validate_json(raw)
    except ValidationError:
        return
    try:
        voting.record_vote(session, VOTERS[0], body.pair_token, body.winner_id)
    except voting.VotingError:
        return
    raise AssertionError(f"a made-up pair token was accepted: {body!r}")


def _operations(session: Session, fdp: atheris.FuzzedDataProvider) -> None:
    tokens: list[tuple[int, voting.Pair]] = []
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op, voter = fdp.ConsumeIntInRange(0, 5), VOTERS[fdp.ConsumeIntInRange(0, 1)]
        try:
            if op <= 1 or not tokens:
                tokens.append((voter, voting.next_pair(session, voter)))
                continue
            owner, pair = tokens[fdp.ConsumeIntInRange(0, len(tokens) - 1)]
            if op == 2:
                winner = [pair.left.id, pair.right.id, None, fdp.ConsumeInt(4)][fdp.ConsumeIntInRange(0, 3)]
                voting.record_vote(session, voter, pair.token, winner)
            elif op == 3:
                voting.skip_pair(session, voter, pair.token)
            elif op == 4:
                voting.undo_last(session, voter)
            else:
                voting.record_vote(session, voter, pair.token[: fdp.ConsumeIntInRange(0, 40)], pair.left.id)
        except voting.VotingError:
            pass
    replay = voting.replay_elo(voting.log_rows(session))
    for row in session.scalars(select(Rating).where(Rating.method == voting.ELO)):
        want = replay.ratings.get(row.image_id, elo.START)
        if abs(row.rating - want) > 1e-9 or row.votes != replay.votes.get(row.image_id, 0):
            raise AssertionError(f"image {row.image_id}: stored Elo {row.rating} != replay {want}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 3)
    if target == 1:
        action = ["vote_left", "vote_right", "vote_tie", "vote_skip"][fdp.ConsumeIntInRange(0, 3)]
        note = SLACK.record("UFUZZ", action, fdp.ConsumeUnicodeNoSurrogates(200))
        if not isinstance(note, str) or not note:
            raise AssertionError("the Slack handler gave no note")
        return
    if target == 2:
        try:
            verify_image_token(fdp.ConsumeUnicodeNoSurrogates(300), SETTINGS)
        except SignatureError:
            return
        raise AssertionError("a made-up image token was accepted")
    with Session(ENGINE) as session, session.begin():
        try:
            if target == 0:
                _vote_body(session, fdp.ConsumeBytes(fdp.remaining_bytes()))
            else:
                _operations(session, fdp)
        finally:
            session.rollback()


def main() -> None:
    warnings.simplefilter("ignore")
    os.environ.setdefault("DOOHABLE_HOME", str(HOME))
    import doohable.ranking.scheduler  # noqa: F401  (imported lazily by voting: load it before fuzzing)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
