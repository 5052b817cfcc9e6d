"""The moderation queue page (``/moderation``, moderators); it calls the JSON API under
``/api/v1/moderation`` (:mod:`doohable.api.routers.moderation`) with the session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from doohable.api.deps import PageUser
from doohable.api.page_errors import error_page
from doohable.api.templating import render
from doohable.store.users import has_role

router = APIRouter(prefix="/moderation", tags=["moderation"], include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def moderation_page(request: Request, user: PageUser) -> Response:
    """The moderation queue page (moderators)."""
    if user is None:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=status.HTTP_303_SEE_OTHER)
    if not has_role(user, "moderator"):
        return error_page(
            request, status.HTTP_403_FORBIDDEN, "The moderation page is for moderators and admins."
        )
    return render(request, "moderation.html")
