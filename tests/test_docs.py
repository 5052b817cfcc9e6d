"""The docs describe the software as it is: no history of how it came to be (that is for
``git log`` and CHANGELOG.md), and every relative link and every repository path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "src/doohable/model/bundled/MODEL_CARD.md"]
    + list((ROOT / "docs").glob("*.md"))
)

ORDINAL = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th))"
WORK = r"(?:this|that|previous|earlier|later|last|next)"
HISTORY = {
    "a numbered work session": re.compile(
        rf"\b{ORDINAL}\s+sessions?\b|\bsessions?\s+\d+\b|\bsessions'", re.I
    ),
    "a session of the work": re.compile(rf"\b{WORK}\s+session'?s?\b(?!\s+cookie)", re.I),
    "an issue number": re.compile(r"\bissues?\s*#?\d+|\bthe issue'?s?\b", re.I),
    "an issue reference": re.compile(r"(?<![\w&/#])#\d+\b"),
    "narrated progress": re.compile(
        r"\buntil the \w+ session|\bat last\b|\bnext time\b|\bas shipped until\b", re.I
    ),
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(
    r"`((?:benchmarks|docs|scripts|src|tests|fuzz)/[\w./-]+\.(?:py|sh|md|html|json|onnx|npz))`"
)


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_docs_tell_no_history(doc: Path) -> None:
    found = [
        f"{_rel(doc)}:{n}: {what}: {m.group(0)!r}"
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for what, pattern in HISTORY.items()
        for m in pattern.finditer(line)
    ]
    assert not found, "history belongs in git log and CHANGELOG.md:\n" + "\n".join(found)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_and_named_paths_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            missing.append(f"link {target}")
    missing += [f"path {p}" for p in REPO_PATH.findall(text) if not (ROOT / p).exists()]
    assert not missing, f"{_rel(doc)} names what does not exist: {missing}"


def test_the_history_patterns_catch_history_and_spare_sessions_of_the_app() -> None:
    def hits(line: str) -> list[str]:
        return [what for what, pattern in HISTORY.items() if pattern.search(line)]

    for line in ("the seventh session's slower AMD EPYC", "until the seventh session two MobileNetV2",
                 "Decoding and ingest (issue 2)", "fixed in #12", "measured in session 2"):
        assert hits(line), line
    for line in ("a signed session cookie (`doohable_session`)", "run on the session's connection",
                 "`SessionDep`", "one listener for every session", "colour #fff", "step 2 of 3"):
        assert not hits(line), line
