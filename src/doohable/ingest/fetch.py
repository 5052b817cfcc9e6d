"""URLs fetched without server-side request forgery: http(s) only, every address the name
resolves to must be public, the connection goes to the checked address (no second DNS
lookup), redirects are followed by hand and checked again, size and time are capped."""

from __future__ import annotations

import ipaddress
import socket
import time

import httpx

from doohable import __version__
from doohable.config import Settings
from doohable.ingest.common import IngestError

MAX_REDIRECTS = 5
#: cloud metadata endpoints, refused even when private addresses are allowed (tests)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)


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
