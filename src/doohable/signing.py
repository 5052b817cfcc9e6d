"""Signed, expiring image URLs and the app's secret key.

Voters never see a blob path: an image is served from ``/img/{token}`` where ``token`` is an
itsdangerous signature of ``{"h": sha256, "f": format}`` that expires after
``settings.signed_url_ttl_s``. The same secret signs the session cookie of the pages.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from doohable.config import Settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SALT = "doohable-image-url"
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
}


class SignatureError(ValueError):
    """A signed token is tampered with, malformed or expired; the message says which."""


@dataclass(frozen=True)
class SignedImage:
    """What a valid image token grants: the blob (by SHA-256) and its media type."""

    sha256: str
    media_type: str


def secret_key(settings: Settings) -> str:
    """The app secret: ``DOOHABLE_SECRET_KEY``, else ``DOOHABLE_HOME/secret_key``.

    The file is generated once (0600, 256 random bits); concurrent first starts of several
    server processes agree on one key because the file is published with an atomic link.
    """
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value()
    path = Path(settings.home) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)  # atomic; fails if another process won the race
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty; delete it or set DOOHABLE_SECRET_KEY")
    return key


_serializers: dict[tuple[str, str], URLSafeTimedSerializer] = {}


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    """The signer for ``settings``, built once per process (not per image URL: the key file
    is read once)."""
    env_key = settings.secret_key.get_secret_value() if settings.secret_key is not None else ""
    home = str(settings.home)  # an absolute home names one key file: no resolve() per URL
    cache_key = (home if os.path.isabs(home) else str(Path(home).resolve()), env_key)
    signer = _serializers.get(cache_key)
    if signer is None:
        signer = _serializers[cache_key] = URLSafeTimedSerializer(secret_key(settings), salt=_SALT)
    return signer


def image_token(sha256: str, fmt: str, settings: Settings) -> str:
    """A URL-safe token granting access to one blob until it expires."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return _serializer(settings).dumps({"h": sha256, "f": fmt})


def image_url(sha256: str, fmt: str, settings: Settings) -> str:
    """The path (``/img/{token}``) at which a voter can fetch one image for a while."""
    return f"/img/{image_token(sha256, fmt, settings)}"


def verify_image_token(token: str, settings: Settings) -> SignedImage:
    """The blob a token grants; raises :class:`SignatureError` if tampered or expired."""
    try:
        data = _serializer(settings).loads(token, max_age=settings.signed_url_ttl_s)
    except SignatureExpired as e:
        raise SignatureError("this image link has expired") from e
    except BadSignature as e:
        raise SignatureError("this image link is not valid") from e
    sha = data.get("h") if isinstance(data, dict) else None
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise SignatureError("this image link is not valid")
    return SignedImage(sha256=sha, media_type=MEDIA_TYPES.get(str(data.get("f")), "application/octet-stream"))
