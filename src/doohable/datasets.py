"""Where the shared data sets live: the one definition of each path.

The data sets (``../shared/data`` from the project's root; read-only, never copied into the
repository) are found in this order:

1. the folder named by the environment variable ``DOOHABLE_SHARED_DATA``;
2. ``<project root>/../shared/data`` when this package runs from a source checkout
   (the project root holds ``pyproject.toml``);
3. ``../shared/data`` relative to the working directory (an installed package run from the
   project's root).

Each function returns a path and checks nothing: callers report a missing folder in their own
terms (a CLI error, a skipped test).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "DOOHABLE_SHARED_DATA"


def project_root() -> Path | None:
    """The source checkout this package runs from (the folder with ``pyproject.toml``), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def shared_data() -> Path:
    """The folder holding the shared data sets (see the module docstring for the order)."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    root = project_root()
    return root.parent / "shared" / "data" if root is not None else Path("..") / "shared" / "data"


def scut_fbp5500() -> Path:
    """SCUT-FBP5500's 4,400 faces: ``labels.csv`` (image, score, subset, fold) and ``images/``."""
    return shared_data() / "scut-fbp5500"


def ava() -> Path:
    """AVA's vote histograms: ``AVA_subset.txt`` (AVA.txt format) and a few ``images/``."""
    return shared_data() / "ava"


def pairwise_holidays() -> Path:
    """Real pairwise votes on scenery photos: ``votes.csv`` (voter, winner, loser), ``images.csv``."""
    return shared_data() / "pairwise-holidays"


def live_challenge() -> Path:
    """LIVE In the Wild Image Quality Challenge: phone photos with mean opinion scores."""
    return shared_data() / "live-challenge"
