"""Content-addressed image bytes: a local folder (default) or S3.

A blob's name is the SHA-256 of its bytes, fanned out as ``ab/cd/abcd…`` so that no folder
grows huge. Writing the same bytes twice is a no-op, so ``put`` is idempotent."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStoreError(OSError):
    """The blob store cannot be used right now (unreachable, disk full); nothing was written."""


def _disk_full(root: Path, e: OSError) -> OSError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BlobStoreError(e.errno, f"disk full: no space left for image bytes in {root}")
    return e


def _s3_faults(method: Any) -> Any:
    """Turn an S3 connection failure into a :class:`BlobStoreError` with a clear reason."""

    @functools.wraps(method)
    def wrapper(self: S3BlobStore, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError

        try:
            return method(self, *args, **kwargs)
        except BotoCoreError as e:
            raise BlobStoreError(errno.EHOSTUNREACH, f"the blob store {self.url} is unreachable: {e}") from e

    return wrapper


def _s3_pages(store: S3BlobStore, pages: Any) -> Iterator[dict[str, Any]]:
    """The listing pages, with a connection failure as a :class:`BlobStoreError`."""
    from botocore.exceptions import BotoCoreError

    try:
        yield from pages
    except BotoCoreError as e:
        raise BlobStoreError(errno.EHOSTUNREACH, f"the blob store {store.url} is unreachable: {e}") from e


def blob_key(sha256: str) -> str:
    """The relative name ``ab/cd/abcd…`` of a blob; refuses anything but 64 lowercase hex digits
    (so that a key can never point outside the store)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobStore(Protocol):
    """Where image bytes live, by SHA-256."""

    url: str

    def put(self, sha256: str, data: bytes) -> None: ...
    def get(self, sha256: str) -> bytes: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> None: ...
    def iter_blobs(self) -> Iterator[tuple[str, float]]: ...


class LocalBlobStore:
    """Blobs in a folder; writes are atomic (temporary file in the same folder, then rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def path(self, sha256: str) -> Path:
        """The file holding the blob ``sha256``."""
        return self.root / blob_key(sha256)

    def put(self, sha256: str, data: bytes) -> None:
        """Store ``data`` under ``sha256`` (no-op when it is already there)."""
        target = self.path(sha256)
        if target.exists():
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except OSError as e:
            raise _disk_full(self.root, e) from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise _disk_full(self.root, e) from e
            raise

    def get(self, sha256: str) -> bytes:
        """The bytes of ``sha256``; KeyError when missing."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        """Remove a blob (no error when it is already gone)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """Every stored blob as ``(sha256, modification time in epoch seconds)``."""
        for p in self.root.glob("??/??/*"):
            if _SHA256.fullmatch(p.name):
                with contextlib.suppress(FileNotFoundError):
                    yield p.name, p.stat().st_mtime

    def remove_temp_files(self, older_than_s: float) -> int:
        """Delete temporary files that a crashed ``put`` left (older than ``older_than_s``)."""
        removed, limit = 0, time.time() - older_than_s
        for p in self.root.glob("??/??/.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime <= limit:
                    p.unlink()
                    removed += 1
        return removed


class S3BlobStore:
    """Blobs in an S3 bucket under a prefix; endpoint and keys from the usual AWS variables
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if not bucket:
            raise ValueError("an S3 blob URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
            )
        self.client = client

    def key(self, sha256: str) -> str:
        k = blob_key(sha256)
        return f"{self.prefix}/{k}" if self.prefix else k

    @_s3_faults
    def put(self, sha256: str, data: bytes) -> None:
        """Store ``data`` (an S3 PUT is atomic: readers see all of it or nothing)."""
        self.client.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=data)

    @_s3_faults
    def get(self, sha256: str) -> bytes:
        """The bytes of ``sha256``; KeyError when missing."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
        except self.client.exceptions.NoSuchKey:
            raise KeyError(sha256) from None
        body: bytes = obj["Body"].read()
        return body

    @_s3_faults
    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    @_s3_faults
    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """Every stored blob as ``(sha256, last-modified time in epoch seconds)``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        for page in _s3_pages(self, pages):
            for obj in page.get("Contents", []):
                name = str(obj["Key"]).rsplit("/", 1)[-1]
                if _SHA256.fullmatch(name):
                    yield name, obj["LastModified"].timestamp()


def open_blobs(url: str) -> BlobStore:
    """The blob store for ``file://DIR`` or ``s3://bucket/prefix``.

    Raises
    ------
    ValueError : any other scheme.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.netloc + parsed.path)
        if not path:
            raise ValueError(f"a file blob URL needs a folder: {url!r} (e.g. file:///var/doohable/blobs)")
        return LocalBlobStore(path)
    if parsed.scheme == "s3":
        return S3BlobStore(parsed.netloc, parsed.path)
    raise ValueError(f"unsupported blob URL {url!r}: use file://DIR or s3://bucket/prefix")
