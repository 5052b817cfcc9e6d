"""Every module of src/doohable stays readable: no module over 500 lines, no function body over
60 lines. A function's signature does not count (a CLI command's options are a declarative
list), and neither do the migrations' schema declarations."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "doohable"
MAX_MODULE, MAX_BODY = 500, 60


def long_parts(src: Path = SRC) -> list[str]:
    """``path: N lines`` for each module over MAX_MODULE lines and ``path:name: N lines`` for each
    function whose body (from its first statement to its end) is over MAX_BODY lines."""
    found = []
    for path in sorted(src.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        rel = path.relative_to(src.parent)
        if (n := len(text.splitlines())) > MAX_MODULE:
            found.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
                if body > MAX_BODY:
                    found.append(f"{rel}:{node.name}: {body} lines")
    return found


def test_the_check_sees_a_long_function_and_not_a_long_signature(tmp_path: Path) -> None:
    sig = "def f(\n" + "".join(f"    a{i}: int = 0,\n" for i in range(80)) + ") -> None:\n    pass\n"
    long = "def g() -> None:\n" + "    x = 1\n" * 61
    (tmp_path / "m.py").write_text(sig + "\n\n" + long)
    assert long_parts(tmp_path) == [f"{tmp_path.name}/m.py:g: 61 lines"]


def test_no_long_module_or_function() -> None:
    assert long_parts() == []
