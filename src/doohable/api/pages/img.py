"""``GET /img/{token}``: the bytes of the image a signed, expiring token grants (the URLs the
JSON API and the pages hand out, see :func:`doohable.signing.image_url`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from doohable.api.deps import ServicesDep
from doohable.signing import SignatureError, verify_image_token

router = APIRouter(prefix="/img", tags=["images"])


@router.get("/{token}", response_class=Response, responses={200: {"content": {"image/*": {}}}})
def image_bytes(token: str, services: ServicesDep) -> Response:
    """The bytes of the image a signed token grants (403 when tampered with or expired)."""
    settings = services.settings
    try:
        signed = verify_image_token(token, settings)
    except SignatureError as e:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(e)) from e
    try:
        data = services.blobs.get(signed.sha256)
    except KeyError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this image is no longer stored") from e
    headers = {
        "Cache-Control": f"private, max-age={settings.signed_url_ttl_s}",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(data, media_type=signed.media_type, headers=headers)
