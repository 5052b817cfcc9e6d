"""Any source of images -> blob store + ``images``/``sources`` rows, de-duplicated.

* Exact duplicates (same SHA-256 of the bytes) add a :class:`Source` row (every sighting is
  recorded) but no new image.
* Near-duplicates (perceptual hash within ``settings.near_duplicate_distance`` bits) are
  added as their own image with ``near_duplicate_of`` pointing at the closest one.

The parts:

- :mod:`~doohable.ingest.store`: bytes -> blob + rows, atomically; the sweep of orphan blobs;
- :mod:`~doohable.ingest.fetch`: URLs fetched without server-side request forgery;
- :mod:`~doohable.ingest.inputs`: files, folders, URLs and lists -> items, and the ingest run;
- :mod:`~doohable.ingest.phash`: perceptual hashes and the near-duplicate index;
- :mod:`~doohable.ingest.common`: the shared types and :class:`IngestError`.
"""

from doohable.ingest.common import IngestError, IngestReport, IngestResult, SourceInfo
from doohable.ingest.fetch import (
    MAX_REDIRECTS,
    METADATA_ADDRESSES,
    address_problem,
    fetch_url,
    resolve_public,
)
from doohable.ingest.inputs import (
    LIST_SUFFIXES,
    MAX_LIST_DEPTH,
    Item,
    ProgressFn,
    expand_inputs,
    ingest_inputs,
    read_list,
)
from doohable.ingest.phash import PhashIndex, hamming, perceptual_hash
from doohable.ingest.store import ingest_bytes, sweep_orphan_blobs

__all__ = [
    "LIST_SUFFIXES", "MAX_LIST_DEPTH", "MAX_REDIRECTS", "METADATA_ADDRESSES", "IngestError",
    "IngestReport", "IngestResult", "Item", "PhashIndex", "ProgressFn", "SourceInfo",
    "address_problem", "expand_inputs", "fetch_url", "hamming", "ingest_bytes", "ingest_inputs",
    "perceptual_hash", "read_list", "resolve_public", "sweep_orphan_blobs",
]
