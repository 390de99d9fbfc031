"""The documents hold together: every relative link in README.md and docs/ reaches a file of the repository (and
its ``#anchor`` a heading of that file), and the README's test command is the one CI runs."""
from __future__ import annotations

import re
from pathlib import Path

from tests.source_tree import ROOT, project_files

# linked before it exists: the seed study's results page is written by the seed-study command's own change
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The Markdown text without its fenced code blocks (code may hold brackets that are no links)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path), flags=re.MULTILINE):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(path: Path) -> list[str]:
    """'target (why)' for each relative link of ``path`` that reaches no file or no heading."""
    broken = []
    for target in LINK.findall(_prose(path)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    return broken


def test_headings_become_githubs_anchors():
    assert slug("10. Bad input, and what we write") == "10-bad-input-and-what-we-write"
    assert slug("synthvid, the offline synthetic set") == "synthvid-the-offline-synthetic-set"
    assert slug("The `--amp` flag") == "the---amp-flag"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n[ok](a.md#title) [gone](b.md) [bad anchor](a.md#nothing)\n")
    assert broken_links(tmp_path / "a.md") == ["b.md (no such file)", "a.md#nothing (no such heading)"]


def test_every_relative_link_of_the_documents_resolves():
    documents = [path for path in project_files({".md"})
                 if path == ROOT / "README.md" or path.parent == ROOT / "docs"]
    assert ROOT / "README.md" in documents and len(documents) > 1
    broken = [f"{path.relative_to(ROOT)}: {link}" for path in documents for link in broken_links(path)]
    assert broken == [], "\n".join(broken)


def test_the_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -r requirements-dev.txt && python -m pytest -q" in readme
    assert "-r requirements.txt -r requirements-dev.txt" in ci
    assert re.search(r"^python -m pytest -q$", ci, flags=re.MULTILINE)
