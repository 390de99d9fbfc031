"""The import arrows run one way: entry scripts -> app/ -> model/, dataset/ -> utils/ (tools/ and bench/ beside the
entry scripts); and every comment points at documents inside the repository (docs/behaviour.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.source_tree import ROOT, entry_scripts, imported_modules, module_name, python_files, text_files

ENTRY = "<entry script>"
# What each package may not import. model/ and dataset/ are peers: neither needs the other today, so neither may.
FORBIDDEN = {
    "utils": {"app", "model", "dataset", "tools", "bench", ENTRY},
    "model": {"app", "dataset", "tools", "bench", ENTRY},
    "dataset": {"app", "model", "tools", "bench", ENTRY},
    "app": {"tools", "bench", ENTRY},
    "tools": {"bench", ENTRY},
    "bench": {ENTRY},
}
UNCHECKED = {"tests"}  # tests may import anything, entry scripts included
BEHAVIOUR = ROOT / "docs" / "behaviour.md"


def _layer(module: str, scripts: set[str]) -> str:
    top = module.split(".")[0]
    return ENTRY if top in scripts else top


def _violations(package: str) -> list[str]:
    scripts = entry_scripts()
    found = []
    for path in python_files():
        if module_name(path).split(".")[0] != package or path.parent == ROOT:
            continue
        for imported in sorted(imported_modules(path)):
            if _layer(imported, scripts) in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)} imports {imported}")
    return found


def test_every_package_has_a_layer():
    packages = {path.relative_to(ROOT).parts[0] for path in python_files() if path.parent != ROOT}
    assert packages - UNCHECKED <= set(FORBIDDEN), f"packages without a layer: {packages - UNCHECKED - set(FORBIDDEN)}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package):
    assert _violations(package) == [], f"{package}/ may not import {sorted(FORBIDDEN[package])}"


def test_the_layer_check_sees_imports():
    """The checks above read real imports: app/ uses model/ and dataset/, model/ uses utils/."""
    imports = {module_name(p): imported_modules(p) for p in python_files()}
    assert any(m.startswith("model") for m in imports["app.builders"])
    assert any(m.startswith("dataset") for m in imports["app.builders"])
    assert any(m.startswith("utils") for m in imports["model.losses"])


ENGINE_LOOPS = re.compile(r"train_one_epoch|evaluate_\w+")


def test_only_the_loops_are_imported_from_the_engine():
    """app/engine.py holds the training and evaluation loops; what they use has its own module."""
    found = [f"{path.relative_to(ROOT)} imports {name}" for path in python_files()
             for names in re.findall(r"^from app\.engine import \(?([^)\n]+)", _text(path), flags=re.MULTILINE)
             for name in re.split(r"[,\s]+", names.strip()) if name and not ENGINE_LOOPS.fullmatch(name)]
    assert found == [], "import these from their own module (app.stream, app.cache, app.records):\n" + "\n".join(found)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_no_reference_to_documents_outside_the_repository():
    outside = re.compile(r"\bSPEC\b|\.\./shared|shared/(?:SPEC|reference)")
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in text_files() if path != Path(__file__).resolve()
            for n, line in enumerate(_text(path).splitlines(), start=1) if outside.search(line)]
    assert hits == [], "point at docs/behaviour.md sections instead:\n" + "\n".join(hits)


def _sections() -> set[str]:
    """Numbers of the sections and subsections of docs/behaviour.md ('## 4. ...', '### 4.7 ...')."""
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.?\s", _text(BEHAVIOUR), flags=re.MULTILINE))


def _cited(text: str) -> set[str]:
    """Section numbers cited as '§7', '§4.3', '§3-5' (3, 4, 5) or '§1, 2, 6, 7'."""
    numbers = set()
    for first, rest in re.findall(r"§(\d+(?:\.\d+)?)((?:\s*(?:-|,)\s*\d+(?:\.\d+)?)*)", text):
        parts = [first, *re.findall(r"\d+(?:\.\d+)?", rest)]
        numbers.update(parts)
        if "-" in rest and all("." not in p for p in parts):
            numbers.update(str(n) for n in range(int(parts[0]), int(parts[-1]) + 1))
    return numbers


def test_behaviour_document_has_the_sections_of_the_contract():
    assert {str(n) for n in range(1, 11)} | {f"4.{n}" for n in range(1, 9)} <= _sections()


def test_every_cited_section_exists():
    sections = _sections()
    missing = [f"{path.relative_to(ROOT)}: §{number}"
               for path in text_files() for number in sorted(_cited(_text(path))) if number not in sections]
    assert missing == [], f"sections cited but not in {BEHAVIOUR.relative_to(ROOT)}: {missing}"


def test_sections_are_cited_by_number():
    by_name = [f"{path.relative_to(ROOT)}: {match}" for path in text_files()
               for match in re.findall(r'behaviour\.md[ (]*"[^"\n]*"', _text(path))]
    assert by_name == [], "cite docs/behaviour.md as §N (a name is not checked):\n" + "\n".join(by_name)


def test_citations_are_read():
    assert _cited("docs/behaviour.md §3-5 and §4.7; §1, 2, 6") == {"1", "2", "3", "4", "4.7", "5", "6"}
    assert {"4.7", "8"} <= _cited(_text(ROOT / "model" / "grounding.py")) | _cited(_text(ROOT / "app" / "cache.py"))
