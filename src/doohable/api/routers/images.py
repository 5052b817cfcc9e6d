"""Images: upload (``POST /api/v1/images``) and metadata with a signed URL to the bytes
(served by :mod:`doohable.api.pages.img`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status
from pydantic import BaseModel

from doohable.api.deps import BlobsDep, IdPath, SessionDep, SettingsDep, VoterDep, absolute_url
from doohable.signing import image_url
from doohable.store.models import Image

router = APIRouter(prefix="/images", tags=["images"])


class UploadOut(BaseModel):
    id: int
    sha256: str
    duplicate: bool


class ImageOut(BaseModel):
    id: int
    sha256: str
    width: int
    height: int
    format: str
    status: str
    url: str
    source: str | None = None
    author: str | None = None
    caption: str | None = None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadOut)
def upload_image(
    user: VoterDep,
    session: SessionDep,
    settings: SettingsDep,
    blobs: BlobsDep,
    file: Annotated[UploadFile, File()],
) -> UploadOut:
    """Store an uploaded image (de-duplicated); a bad image gets 4xx with the reason."""
    from doohable.images import ImageError
    from doohable.ingest import IngestError, SourceInfo, ingest_bytes

    data = file.file.read(settings.max_image_bytes + 1)
    source = SourceInfo(kind="upload", uri=file.filename or "upload", added_by=user.id)
    try:
        result = ingest_bytes(session, blobs, data, source=source, settings=settings)
    except (ImageError, IngestError) as e:
        code = status.HTTP_413_CONTENT_TOO_LARGE if len(data) > settings.max_image_bytes else 400
        raise HTTPException(code, str(e)) from e
    return UploadOut(id=result.image_id, sha256=result.sha256, duplicate=result.duplicate)


@router.get("/{image_id}", response_model=ImageOut)
def get_image(
    image_id: IdPath, _user: VoterDep, session: SessionDep, settings: SettingsDep, request: Request
) -> ImageOut:
    """One image's metadata with a signed, expiring URL to its bytes."""
    img = session.get(Image, image_id)
    if img is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image {image_id}")
    url = absolute_url(request, image_url(img.sha256, img.format, settings))
    src = img.sources[0] if img.sources else None
    return ImageOut(
        id=img.id, sha256=img.sha256, width=img.width, height=img.height, format=img.format,
        status=img.status, url=url, source=(src.network or src.kind) if src else None,
        author=src.author if src else None, caption=src.caption if src else None,
    )

