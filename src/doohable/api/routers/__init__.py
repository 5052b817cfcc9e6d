"""The JSON API: one router per resource, each with its prefix, gathered in :data:`api_router`
under ``/api/v1`` (``create_app`` includes it; the HTML pages are :mod:`doohable.api.pages`).

=================  ==========================  =========================================
module             paths                       what
=================  ==========================  =========================================
``images``         ``/api/v1/images``          upload, metadata with a signed URL
``userscript``     ``/api/v1/images/url``      ingest an image seen on a page (CORS)
``pairs``          ``/api/v1/pairs``           the next pair, skip, again
``votes``          ``/api/v1/votes``           vote, undo, stats, CSV export
``ratings``        ``/api/v1/ratings``         Elo and Bradley-Terry, rebuild
``score``          ``/api/v1/score``           score one image or a batch
``moderation``     ``/api/v1/moderation``      queue, decisions, policy, audit
``retrain``        ``/api/v1/retrain``         start the retrain job, its state (admin)
=================  ==========================  =========================================
"""

from __future__ import annotations

from fastapi import APIRouter

from doohable.api.routers import images, moderation, pairs, ratings, retrain, score, userscript, votes

API_PREFIX = "/api/v1"
api_router = APIRouter(prefix=API_PREFIX)
api_router.include_router(images.router)
api_router.include_router(pairs.router)
api_router.include_router(votes.router)
api_router.include_router(ratings.router)
api_router.include_router(score.router)
api_router.include_router(moderation.router)
api_router.include_router(userscript.router)
api_router.include_router(retrain.router)

__all__ = ["API_PREFIX", "api_router"]
