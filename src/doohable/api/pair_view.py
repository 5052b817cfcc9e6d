"""The JSON shape of a voting pair, shared by the pairs and votes routers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel

from doohable import voting
from doohable.api.deps import absolute_url
from doohable.config import Settings
from doohable.signing import image_url


class Side(BaseModel):
    id: int
    url: str


class PairOut(BaseModel):
    pair_token: str
    left: Side
    right: Side


def pair_out(pair: voting.Pair, request: Request, settings: Settings) -> dict[str, Any]:
    """The JSON shape of a pair (:class:`PairOut`), with signed absolute image URLs.

    A plain dict: the hot route answers it as-is instead of validating a pydantic model."""
    base = absolute_url(request, "")

    def side(img: voting.PairImage) -> dict[str, Any]:
        return {"id": img.id, "url": base + image_url(img.sha256, img.format, settings)}

    return {"pair_token": pair.token, "left": side(pair.left), "right": side(pair.right)}
