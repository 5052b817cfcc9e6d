"""Ranking: the report's Elo, Bradley–Terry with voter reliability, pair schedulers, simulation.

Pure NumPy/SciPy, no database: the voting service keeps the vote log and calls in here.
"""

from doohable.ranking import bradley_terry, elo, metrics, scheduler
from doohable.ranking.scheduler import NoPairAvailable, Scheduler, create
from doohable.ranking.state import RatingState
from doohable.ranking.votes import Comparisons, IdIndex, outcome_of

__all__ = [
    "Comparisons", "IdIndex", "NoPairAvailable", "RatingState", "Scheduler",
    "bradley_terry", "create", "elo", "metrics", "outcome_of", "scheduler",
]
