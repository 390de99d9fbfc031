"""The project's own files and the modules its Python files import, read with ``ast`` (nothing is imported).

Used by the tests of the import layering, the requirement files and the references to docs/behaviour.md.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folders of user files (git-ignored: datasets, checkpoints, caches, logs, demo outputs), not project sources.
USER_DIRS = {"data", "saved_models", "cache", "logs", "visualisations", "demo_output", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".cfg", ".toml", ".txt"}


def project_files(suffixes: set[str]) -> Iterator[Path]:
    """Files under the repository root with one of ``suffixes``, hidden folders and user folders skipped."""
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in USER_DIRS for part in parts[:-1]):
            continue
        if path.is_file() and path.suffix in suffixes:
            yield path


def python_files() -> list[Path]:
    return list(project_files({".py"}))


def text_files() -> list[Path]:
    """Sources and documents (Python, Markdown, cfg, toml, requirement files) and the CI script."""
    return [*project_files(TEXT_SUFFIXES), *(p for p in [ROOT / ".ci" / "run"] if p.is_file())]


def module_name(path: Path) -> str:
    """Dotted module name of a file under the root (``app/engine.py`` -> ``app.engine``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def entry_scripts() -> set[str]:
    """Module names of the top-level scripts (``train_semantic_attention_cogrounding``, ``run_demo``, ...)."""
    return {p.stem for p in ROOT.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file (lazy imports included).

    ``from package import name`` counts as importing ``package``; relative imports are resolved against the
    file's own package.
    """
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    names.add(".".join([*base, node.module]))
                else:
                    names.update(".".join([*base, alias.name]) for alias in node.names)
            else:
                names.add(node.module)
    return names
