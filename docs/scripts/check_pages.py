"""Run the code blocks of documentation pages, so that the docs cannot drift from the code.

Usage: python docs/scripts/check_pages.py PAGE.md [PAGE.md ...]

Per page, in order and in one namespace (each page starts fresh):

* ```` ```pycon ```` blocks are doctests: every ``>>>`` example runs and its output must
  match (flags ELLIPSIS and NORMALIZE_WHITESPACE);
* ```` ```python ```` blocks are executed;
* other blocks (``sh``, ``text``, ...) and blocks that include a script through a
  ``--8<--`` snippet line are skipped (the scripts are run by the test suite themselves).

A line ``<!-- docs-test: skip -->`` right before a block skips it;
``<!-- docs-test: requires SPEC [SPEC ...] -->`` runs it only where every named backend
(``cupy``, ``torch:cuda``) is usable. Exit status 1 if any block failed.
"""

from __future__ import annotations

import doctest
import re
import sys
import traceback
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<what>.*?)\s*-->$")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(line number, language, code, marker) of each fenced block."""
    out = []
    lines = text.split("\n")
    i = 0
    marker = ""
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m is None:
            mark = MARKER.match(line.strip())
            if mark:
                marker = mark.group("what")
            elif line.strip():
                marker = ""
            i += 1
            continue
        indent, fence = len(m.group("indent")), m.group("fence")
        lang = m.group("info").strip().split(" ")[0]
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:])
            i += 1
        out.append((start, lang, "\n".join(body) + "\n", marker))
        marker = ""
        i += 1
    return out


def usable(specs: list[str]) -> bool:
    import xgrad

    for spec in specs:
        try:
            xgrad.get_backend(spec)
        except (ImportError, ValueError, RuntimeError):
            return False
    return True


def check_page(path: Path) -> tuple[int, int, int]:
    """Run one page; returns (blocks run, blocks skipped, failures)."""
    text = path.read_text(encoding="utf-8")
    globs: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    parser = doctest.DocTestParser()
    ran = skipped = failed = 0
    for line, lang, code, marker in blocks(text):
        if lang not in ("pycon", "python") or code.lstrip().startswith("--8<--"):
            continue
        if marker == "skip" or (marker.startswith("requires") and not usable(marker.split()[1:])):
            skipped += 1
            continue
        ran += 1
        name = f"{path}:{line}"
        if lang == "python":
            try:
                exec(compile(code, name, "exec"), globs)
            except Exception:
                failed += 1
                print(f"FAILED {name}\n{traceback.format_exc()}")
            continue
        test = parser.get_doctest(code, globs, name, str(path), line)
        result = runner.run(test, clear_globs=False)
        globs.update(test.globs)  # DocTest works on a copy: carry names to later blocks
        failed += bool(result.failed)
    return ran, skipped, failed


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    total_failed = 0
    for page in argv:
        ran, skipped, failed = check_page(Path(page))
        print(f"{page}: {ran} blocks run, {skipped} skipped, {failed} failed")
        total_failed += failed
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
