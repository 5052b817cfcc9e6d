"""The pages at the site's root: home, login (token link or form), logout, the voting page
and the leaderboard (Jinja2 + a little JS). Their paths share no segment, so their router has
no prefix.

Other pages extend ``base.html`` and use :func:`doohable.api.templating.render` and
:data:`doohable.api.deps.PageUser` too."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, selectinload

from doohable import voting
from doohable.api.deps import PageUser, SessionDep, SettingsDep
from doohable.api.security import csrf_ok, csrf_token
from doohable.api.templating import STATIC, render
from doohable.config import Settings
from doohable.signing import image_url
from doohable.store.models import Image
from doohable.store.users import user_for_token

router = APIRouter(prefix="", tags=["pages"], include_in_schema=False)


def alt_text(image: Image) -> str:
    """An image's alt text from its metadata: the caption, else who posted it where."""
    src = image.sources[0] if image.sources else None
    if src is not None and src.caption:
        return src.caption[:200]
    by = f" by {src.author}" if src is not None and src.author else ""
    where = f" from {src.network or src.kind}" if src is not None else ""
    return f"image {image.id}{by}{where}"


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=status.HTTP_303_SEE_OTHER)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/vote"


def _sign_in(request: Request, session: SessionDep, token: str, target: str | None) -> Response:
    user = user_for_token(session, token.strip())
    if user is None:
        return render(request, "login.html", {"error": "This token is not valid.", "next": target}, 401)
    request.session.clear()
    request.session.update({"token": token.strip(), "name": user.name, "role": user.role})
    csrf_token(request)  # a fresh CSRF token for the new session
    return RedirectResponse(_safe_next(target), status_code=status.HTTP_303_SEE_OTHER)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/vote", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, session: SessionDep, token: str | None = None, next: str | None = None
) -> Response:
    """The login form, or sign in at once with a token link ``/login?token=...``."""
    if token:
        return _sign_in(request, session, token, next)
    return render(request, "login.html", {"next": next})


@router.post("/login")
def login_form(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form()],
    csrf: Annotated[str, Form(alias="csrf_token")] = "",
    next: Annotated[str | None, Form()] = None,
) -> Response:
    """Sign in with the token typed into the form (CSRF-checked)."""
    if not csrf_ok(request, csrf):
        return render(request, "login.html", {"error": "The form expired; try again.", "next": next}, 403)
    return _sign_in(request, session, token, next)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(alias="csrf_token")] = "") -> Response:
    """Sign out (CSRF-checked)."""
    if not csrf_ok(request, csrf):
        return Response("missing or wrong CSRF token", status_code=status.HTTP_403_FORBIDDEN)
    request.session.clear()
    return RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/vote", response_class=HTMLResponse)
def vote_page(request: Request, user: PageUser) -> Response:
    """Two images side by side; click/tap or keys; can't decide, skip and undo."""
    if user is None:
        return _to_login(request)
    return render(request, "vote.html")


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(request: Request, user: PageUser, session: SessionDep, settings: SettingsDep) -> Response:
    """Rated images with thumbnails, Elo and BT side by side, uncertainty and vote counts."""
    if user is None:
        return _to_login(request)
    elo = {r.image_id: r for r in voting.ratings(session, voting.ELO)}
    try:
        bt = {r.image_id: r for r in voting.ratings(session, voting.BT)}
    except ImportError:
        bt = {}
    order = list(bt) + [i for i in elo if i not in bt]
    order = [i for i in order if (elo.get(i) and elo[i].votes) or i in bt][:500]
    query = session.query(Image).options(selectinload(Image.sources)).filter(Image.id.in_(order))
    images = {img.id: img for img in query.all()} if order else {}
    rows = [
        {
            "rank": k + 1,
            "image_id": i,
            "url": image_url(images[i].sha256, images[i].format, settings),
            "elo": elo.get(i),
            "bt": bt.get(i),
            "alt": alt_text(images[i]),
        }
        for k, i in enumerate(order)
        if i in images
    ]
    return render(request, "leaderboard.html", {"rows": rows, "loop": loop_status(session, settings)})


def loop_status(session: Session, settings: Settings) -> dict[str, Any] | None:
    """Model-vs-votes agreement and how much voting can still settle, for the leaderboard. A
    model a retrain promoted was trained on most of these votes, so its agreement on the votes
    it never saw, measured then, comes too (``held_out``)."""
    from doohable.retrain_service import job_state
    from doohable.voting.prior import model_agreement

    status = model_agreement(session)
    if status is None:
        return None
    settled, _std = voting.ranking_settled(session)
    status["unsettled"] = 1.0 - settled
    result = job_state(settings).get("result") or {}
    if result.get("promoted") and (result.get("rescored") or {}).get("version") == status["version"]:
        status["held_out"] = {"agreement": result["new"]["pairwise_accuracy"],
                              "votes": result["votes"]["measured"]}
    return status
