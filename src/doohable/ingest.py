"""Any source of images -> blob store + ``images``/``sources`` rows, de-duplicated.

* Exact duplicates (same SHA-256 of the bytes) add a :class:`Source` row (every sighting is
  recorded) but no new image.
* Near-duplicates (perceptual hash within ``settings.near_duplicate_distance`` bits) are
  added as their own image with ``near_duplicate_of`` pointing at the closest one.
* Blob and row are atomic: the blob is written first, then the rows in the caller's
  transaction; if that transaction fails, a blob written for it is deleted again unless a
  committed row references it (it may have been there before).
* URLs are fetched without server-side request forgery: http(s) only, every address the
  name resolves to must be public, the connection goes to the checked address (no second
  DNS lookup), redirects are followed by hand and checked again, size and time are capped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import imagehash
import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from doohable import __version__
from doohable.config import Settings
from doohable.images import ImageError, decode, read_limited
from doohable.store.blobs import BlobStore
from doohable.store.models import Image, Source

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_LIST_DEPTH = 3
LIST_SUFFIXES = (".txt", ".csv")
#: cloud metadata endpoints, refused even when private addresses are allowed (tests)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)


class IngestError(ValueError):
    """An input could not be ingested for a reason other than its image content."""


@dataclass(frozen=True)
class SourceInfo:
    """Where an image was seen. ``kind``: file | url | upload | userscript."""

    kind: str
    uri: str
    network: str | None = None
    page_url: str | None = None
    author: str | None = None
    caption: str | None = None
    posted_at: Any = None  # datetime
    added_by: int | None = None  # users.id


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the image's id, whether it was already known, and the closest
    earlier image when it is a near-duplicate."""

    image_id: int
    sha256: str
    duplicate: bool
    near_duplicate_of: int | None
    phash: str = ""


@dataclass
class IngestReport:
    """Counts of an ingest run; ``rejected`` lists ``{"source", "error"}`` for each bad input."""

    added: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)

    def count(self, result: IngestResult) -> None:
        self.image_ids.append(result.image_id)
        if result.duplicate:
            self.duplicates += 1
            return
        self.added += 1
        if result.near_duplicate_of is not None:
            self.near_duplicates += 1

    def reject(self, source: str, error: str) -> None:
        self.rejected.append({"source": source, "error": error})

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "near_duplicates": self.near_duplicates,
            "rejected": self.rejected,
            "image_ids": self.image_ids,
        }


# --- perceptual hashes ------------------------------------------------------------------


def perceptual_hash(image: PILImage.Image) -> str:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) as 16 hex digits."""
    return str(imagehash.phash(image))


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two 16-hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


class PhashIndex:
    """Perceptual hashes of known images, searched by Hamming distance (vectorised)."""

    def __init__(self, ids: Iterable[int] = (), hashes: Iterable[str] = ()) -> None:
        self._ids = list(ids)
        self._hashes = [int(h, 16) for h in hashes]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, session: Session) -> PhashIndex:
        """All images' hashes from the database."""
        rows = session.execute(select(Image.id, Image.phash).order_by(Image.id)).all()
        return cls((r[0] for r in rows), (r[1] for r in rows))

    def add(self, image_id: int, phash: str) -> None:
        self._ids.append(image_id)
        self._hashes.append(int(phash, 16))
        self._arrays = None

    def nearest(self, phash: str, max_distance: int) -> int | None:
        """The id of the closest image within ``max_distance`` bits (lowest id on ties), or None."""
        if not self._ids:
            return None
        if self._arrays is None:
            self._arrays = (np.array(self._ids), np.array(self._hashes, dtype=np.uint64))
        ids, hashes = self._arrays
        dist = np.bitwise_count(hashes ^ np.uint64(int(phash, 16)))
        best = int(np.argmin(dist))  # argmin returns the first: ids are in insertion order
        return int(ids[best]) if int(dist[best]) <= max_distance else None


# --- blob + rows, atomically -------------------------------------------------------------

_NEW_BLOBS = "doohable.ingest.new_blobs"


def _discard_orphan(engine: Engine, blobs: BlobStore, sha256: str) -> None:
    """Delete the blob ``sha256`` unless a committed row references it. When that cannot be
    checked (database down), keep it: an orphan blob is harmless, a row without bytes is not."""
    try:
        with engine.connect() as conn:
            referenced = conn.execute(select(Image.id).where(Image.sha256 == sha256)).first() is not None
    except Exception:
        log.warning("kept blob %s: could not check whether a row references it", sha256, exc_info=True)
        return
    if not referenced:
        blobs.delete(sha256)


def sweep_orphan_blobs(engine: Engine, blobs: BlobStore, older_than_s: float) -> int:
    """Delete the blobs that no image row references and that are older than ``older_than_s``
    (and a crashed local write's temporary files); return how many blobs were deleted.

    A crash (``kill -9``, power loss) between a blob's write and its transaction's commit
    leaves such an orphan; ``doohable serve`` runs this at start-up. The age guard keeps
    the blobs of ingests still in flight in other processes: it must exceed the longest
    ingest transaction (``DOOHABLE_ORPHAN_BLOB_GRACE_S``; 0 only when nothing else writes)."""
    limit = time.time() - older_than_s
    old = [sha for sha, mtime in blobs.iter_blobs() if mtime <= limit]
    deleted = 0
    with engine.connect() as conn:
        for start in range(0, len(old), 500):
            chunk = old[start : start + 500]
            known = set(conn.execute(select(Image.sha256).where(Image.sha256.in_(chunk))).scalars())
            for sha in chunk:
                if sha not in known:
                    blobs.delete(sha)
                    deleted += 1
    remove_temp = getattr(blobs, "remove_temp_files", None)
    if remove_temp is not None:
        remove_temp(older_than_s)
    if deleted:
        log.warning("deleted %d orphan blob(s) left by an interrupted ingest", deleted)
    return deleted


@event.listens_for(Session, "after_commit")
def _forget_new_blobs(session: Session) -> None:
    session.info.pop(_NEW_BLOBS, None)


@event.listens_for(Session, "after_rollback")
def _discard_new_blobs(session: Session) -> None:
    """A transaction that wrote blobs rolled back (even at commit time): remove its orphans."""
    for blobs, sha256 in session.info.pop(_NEW_BLOBS, []):
        _discard_orphan(session.get_bind(), blobs, sha256)  # type: ignore[arg-type]


def _source_row(image_id: int, source: SourceInfo) -> Source:
    return Source(
        image_id=image_id,
        kind=source.kind,
        uri=source.uri,
        network=source.network,
        page_url=source.page_url,
        author=source.author,
        caption=source.caption,
        posted_at=source.posted_at,
        added_by=source.added_by,
    )


def _insert_image(session: Session, image: Image, source: SourceInfo) -> Image:
    """Insert the image and its first source (one flush, inside the caller's transaction)."""
    session.add(image)
    session.flush()
    session.add(_source_row(image.id, source))
    session.flush()
    return image


def ingest_bytes(
    session: Session,
    blobs: BlobStore,
    data: bytes,
    *,
    source: SourceInfo,
    settings: Settings,
    index: PhashIndex | None = None,
) -> IngestResult:
    """Decode ``data`` safely, store it (once) and record this sighting.

    Parameters
    ----------
    session : an open transaction; the caller commits (see module doc for atomicity).
    index : known perceptual hashes; None = read them from the database.

    Raises
    ------
    ImageError : not an acceptable image (the reason is in the message).
    """
    sha = hashlib.sha256(data).hexdigest()
    existing = session.scalar(select(Image).where(Image.sha256 == sha))
    if existing is not None:  # the same bytes were decoded and accepted before
        session.add(_source_row(existing.id, source))
        session.flush()
        if not blobs.exists(sha):  # heal a blob lost outside doohable
            blobs.put(sha, data)
        return IngestResult(existing.id, sha, True, None, existing.phash)

    decoded = decode(
        data,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
    )
    phash = perceptual_hash(decoded.image)
    near = (index if index is not None else PhashIndex.load(session)).nearest(
        phash, settings.near_duplicate_distance
    )
    wrote = not blobs.exists(sha)
    if wrote:
        blobs.put(sha, data)
        session.info.setdefault(_NEW_BLOBS, []).append((blobs, sha))
    row = Image(
        sha256=sha,
        phash=phash,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        size_bytes=len(data),
        near_duplicate_of=near,
    )
    try:
        _insert_image(session, row, source)
    except BaseException:
        if wrote:
            _discard_orphan(session.get_bind(), blobs, sha)  # type: ignore[arg-type]
        raise
    return IngestResult(row.id, sha, False, near, phash)


# --- URLs -------------------------------------------------------------------------------


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused (None: allowed). Metadata endpoints are always refused;
    loopback and private ranges only unless ``allow_private`` (tests)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return None if allow_private else "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


def resolve_public(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve ``host`` to the addresses to connect to; refuse the host when ANY of its
    addresses is not public (a name may mix public and private answers)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise IngestError(f"cannot resolve host {host!r}: {e}") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise IngestError(f"host {host!r} has no address")
    for a in addresses:
        problem = address_problem(ipaddress.ip_address(a.split("%", 1)[0]), allow_private)
        if problem:
            raise IngestError(f"refused: {host} resolves to {a}, {problem}")
    return addresses


def _send_pinned(client: httpx.Client, url: httpx.URL, settings: Settings) -> httpx.Response:
    """GET ``url`` on the address checked by :func:`resolve_public` (no second DNS lookup that
    could answer differently); the Host header and TLS name stay the URL's."""
    if url.scheme not in ("http", "https"):
        raise IngestError(f"only http and https URLs can be fetched, not {url.scheme or 'a bare path'}")
    if not url.host:
        raise IngestError(f"URL has no host: {url}")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = resolve_public(url.host, port, settings.url_allow_private)
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Accept": "image/*",
        "Accept-Encoding": "identity",
        "User-Agent": f"doohable/{__version__}",
    }
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    for i, address in enumerate(addresses):  # e.g. ::1 then 127.0.0.1: use the first that answers
        pinned = url.copy_with(host=address)
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError:
            if i == len(addresses) - 1:
                raise
    raise AssertionError("unreachable: resolve_public returns at least one address")


def _accept(resp: httpx.Response, url: httpx.URL, max_bytes: int, deadline: float) -> bytes:
    """The body of a final (non-redirect) answer: 200, an image content type, within the caps."""
    if resp.status_code != 200:
        raise IngestError(f"HTTP {resp.status_code} {resp.reason_phrase} from {url}")
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if not ctype.startswith("image/") or ctype == "image/svg+xml":
        raise IngestError(f"not an image: the server sent content type {ctype or 'none'!r}")
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise IngestError(f"download is {int(declared):,} bytes, above the {max_bytes:,}-byte limit")
    buf = bytearray()
    for chunk in resp.iter_bytes():
        buf += chunk
        if len(buf) > max_bytes:
            raise IngestError(f"download is above the {max_bytes:,}-byte limit (stopped reading)")
        if time.monotonic() > deadline:
            raise IngestError("download too slow: stopped at the time limit")
    return bytes(buf)


def fetch_url(url: str, settings: Settings) -> bytes:
    """Download an image safely (see the module doc).

    Raises
    ------
    IngestError : bad scheme, forbidden address (also after a redirect), HTTP error,
        non-image content type, too large, too slow, or too many redirects.
    """
    deadline = time.monotonic() + 3 * settings.url_timeout_s
    current = httpx.URL(url)
    with httpx.Client(timeout=settings.url_timeout_s, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = _send_pinned(client, current, settings)
                try:
                    if not resp.is_redirect:
                        return _accept(resp, current, settings.max_image_bytes, deadline)
                    location = resp.headers.get("location")
                    if not location:
                        raise IngestError(f"HTTP {resp.status_code} redirect without a Location: {current}")
                    current = current.join(location)
                finally:
                    resp.close()
            except httpx.HTTPError as e:
                raise IngestError(f"cannot fetch {current}: {e or type(e).__name__}") from e
    raise IngestError(f"more than {MAX_REDIRECTS} redirects")


# --- inputs: files, folders, URLs, lists ------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One thing to ingest: a file path or a URL."""

    kind: str  # file | url
    uri: str


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_url(s: str) -> bool:
    return _SCHEME.match(s) is not None


def read_list(path: Path) -> list[str]:
    """Entries of a ``.txt`` (one per line, ``#`` comments) or ``.csv`` (a column named
    url/path/file/source, else the first column) list; relative paths are taken relative to
    the list's folder."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        header = [c.strip().lower() for c in rows[0]] if rows else []
        named = next((header.index(n) for n in ("url", "path", "file", "source") if n in header), None)
        col, rows = (named, rows[1:]) if named is not None else (0, rows)
        entries = [r[col].strip() for r in rows if len(r) > col]
    else:
        entries = [ln.strip() for ln in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    return [e if _is_url(e) or os.path.isabs(e) else str(path.parent / e) for e in entries]


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder``, recursively, sorted, without hidden files or following links."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def expand_inputs(inputs: Iterable[str], report: IngestReport, depth: int = 0) -> Iterator[Item]:
    """Files, folders (recursive), URLs and ``.txt``/``.csv`` lists -> items; inputs that
    cannot be used go to ``report.rejected``. Inside folders every file is an image candidate
    (a list must be given directly)."""
    for raw in inputs:
        s = raw.strip()
        if not s:
            continue
        if _is_url(s):
            if s.lower().startswith(("http://", "https://")):
                yield Item("url", s)
            else:
                report.reject(s, "only http and https URLs can be fetched")
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            yield from (Item("file", str(f.resolve())) for f in _walk(p))
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            if depth >= MAX_LIST_DEPTH:
                report.reject(s, f"lists nested more than {MAX_LIST_DEPTH} deep")
                continue
            try:
                entries = read_list(p)
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                report.reject(s, f"cannot read the list: {e}")
                continue
            yield from expand_inputs(entries, report, depth + 1)
        elif p.is_file():
            yield Item("file", str(p.resolve()))
        else:
            report.reject(s, "no such file or folder")


ProgressFn = Callable[[int, int, str], None]


def _ingest_item(
    engine: Engine, blobs: BlobStore, item: Item, settings: Settings, index: PhashIndex
) -> IngestResult:
    """Read or fetch one item and ingest it in its own transaction."""
    from doohable.store.db import session_scope

    if item.kind == "url":
        data = fetch_url(item.uri, settings)
    else:
        data = read_limited(item.uri, settings.max_image_bytes)
    source = SourceInfo(item.kind, item.uri)
    try:
        with session_scope(engine) as session:
            return ingest_bytes(session, blobs, data, source=source, settings=settings, index=index)
    except IntegrityError:
        # another process stored the same bytes at the same moment: try again, as a duplicate
        with session_scope(engine) as session:
            return ingest_bytes(session, blobs, data, source=source, settings=settings, index=index)


def ingest_inputs(
    inputs: list[str], settings: Settings, on_progress: ProgressFn | None = None
) -> IngestReport:
    """Ingest every image found in ``inputs``; one transaction per image, so that a bad
    input is listed in ``rejected`` with its reason and never stops the run.

    ``on_progress(done, total, source)`` is called after each item."""
    from doohable.store.blobs import open_blobs
    from doohable.store.db import get_engine, session_scope
    from doohable.store.faults import unavailable_reason

    report = IngestReport()
    items = list(expand_inputs(inputs, report))
    engine = get_engine(settings.resolved_database_url)
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(engine) as session:
        index = PhashIndex.load(session)
    for done, item in enumerate(items, 1):
        try:
            result = _ingest_item(engine, blobs, item, settings, index)
            report.count(result)
            if not result.duplicate:
                index.add(result.image_id, result.phash)
        except (ImageError, IngestError, OSError) as e:
            report.reject(item.uri, str(e))
        except Exception as e:  # a bug or a database error must not lose the rest of the run
            reason = unavailable_reason(e)  # the database down or locked: said plainly
            if reason is None:
                log.exception("ingest of %s failed", item.uri)
            report.reject(item.uri, reason or f"unexpected error ({type(e).__name__}): {e}")
        if on_progress is not None:
            on_progress(done, len(items), item.uri)
    return report
