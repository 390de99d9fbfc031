"""Every third-party module the project imports is declared in requirements.txt, requirements-dev.txt or
requirements-web.txt (the web demo's optional install), and every
declared distribution is used (what CI installs is exactly what the code needs)."""
from __future__ import annotations

import functools
import importlib.metadata
import re
import sys

from tests.source_tree import ROOT, entry_scripts, imported_modules, python_files

REQUIREMENT_FILES = ("requirements.txt", "requirements-dev.txt", "requirements-web.txt")
COMMAND_LINE_TOOLS = {"ruff"}  # declared for the developers' command line, never imported
LOADED_BY_OTHERS = {"python-multipart", "httpx2"}  # Starlette imports them: the upload form, the test client


def _normalise(name: str) -> str:
    """PEP 503 name; every OpenCV wheel (plain, headless, contrib) provides ``cv2``, so they count as one."""
    name = re.sub(r"[-_.]+", "-", name).lower()
    return "opencv" if re.fullmatch(r"opencv(-contrib)?-python(-headless)?", name) else name


def _declared() -> set[str]:
    names = set()
    for file in REQUIREMENT_FILES:
        for line in (ROOT / file).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(_normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)))
    return names


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (project packages and the standard library left out)."""
    own = {p.relative_to(ROOT).parts[0] for p in python_files() if p.parent != ROOT} | entry_scripts()
    found: dict[str, set[str]] = {}
    for path in python_files():
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top not in own and top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {_normalise(d) for d in _installed().get(module, [])}


def test_every_imported_module_is_declared():
    declared = _declared()
    undeclared = {module: sorted(files) for module, files in _third_party_imports().items()
                  if not _distributions(module) & declared}
    assert undeclared == {}, f"imported but not in {' or '.join(REQUIREMENT_FILES)}: {undeclared}"


def test_every_declared_distribution_is_imported():
    used = set().union(*(_distributions(module) for module in _third_party_imports()))
    assert _declared() - COMMAND_LINE_TOOLS - LOADED_BY_OTHERS - used == set()


def test_the_import_scan_finds_the_dependencies():
    assert {"torch", "cv2", "PIL", "numpy", "tqdm", "pytest"} <= set(_third_party_imports())
