"""The voting service: the one place that the API, the pages, Slack and the CLI call.

- :mod:`~doohable.voting.service`: pair tokens, votes, skips, undos and the write order
  that makes the log replay exactly;
- :mod:`~doohable.voting.live`: this process's scheduler state, kept current from the log;
- :mod:`~doohable.voting.ratings`: Elo and Bradley–Terry ratings from the log (cached,
  rebuilt), how settled the ranking is, a voter's counts;
- :mod:`~doohable.voting.log`: reads of the log, the votes that count, the CSV export.

The rating math itself (Elo replay, Bradley–Terry, settled share) is in :mod:`doohable.ranking`.
"""

from doohable.ranking.elo import EloState
from doohable.ranking.elo import game as elo_game
from doohable.ranking.elo import replay_log as replay_elo
from doohable.ranking.metrics import settled_share
from doohable.ranking.votes import LogRow
from doohable.voting.common import (
    BT,
    DEFAULT_SCHEDULER,
    ELO,
    METHODS,
    ConflictError,
    NotFoundError,
    Pair,
    PairImage,
    RatingRow,
    VoteResult,
    VotingError,
)
from doohable.voting.live import active_scheduler
from doohable.voting.log import effective_votes, export_votes_csv, last_log_id, log_rows
from doohable.voting.ratings import (
    BTFit,
    RebuildReport,
    bt_fit,
    fit_bt,
    ranking_settled,
    ratings,
    rebuild_ratings,
    voter_stats,
)
from doohable.voting.service import next_pair, record_vote, skip_pair, undo_last

__all__ = [
    "BT", "DEFAULT_SCHEDULER", "ELO", "METHODS", "BTFit", "ConflictError", "EloState", "LogRow",
    "NotFoundError", "Pair", "PairImage", "RatingRow", "RebuildReport", "VoteResult", "VotingError",
    "active_scheduler", "bt_fit", "effective_votes", "elo_game", "export_votes_csv", "fit_bt",
    "last_log_id", "log_rows", "next_pair", "ranking_settled", "ratings", "rebuild_ratings",
    "record_vote", "replay_elo", "settled_share", "skip_pair", "undo_last", "voter_stats",
]
