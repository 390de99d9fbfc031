"""Crash safety: training and cache writing killed (SIGKILL) at random moments leave every output either the old
complete version or the new complete one, and the next run leaves no temporary file behind. Ctrl-C (SIGINT) and
SIGTERM at random moments of training, evaluation and grounding exit 130 with one line and leave the same, with no
temporary or lock file at all; two runs writing the same outputs: one writes them, the other is refused.

The killed runs are real command lines in subprocesses; the references and the follow-up runs go through the
scripts' ``main`` in-process (the same code path minus interpreter start-up).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch

import test_semantic_attention_cogrounding as test_video
import train_semantic_attention_cogrounding as train_video
from app.cache import MANIFEST, check_cache_manifest, load_cache_entry
from model import SMALL_CFG, build_grounding_model
from tests.helpers import reset_script_loggers
from utils.checkpoint import read_checkpoint
from utils.cli import run_main
from utils.word_utils import load_corpus

REPO = Path(__file__).resolve().parents[1]
EMB = 32
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def flags(root: Path) -> list[str]:
    return ["--data_root", str(root), "--split_root", str(root), "--size", "64", "--lstm", "--cfg", str(SMALL_CFG),
            "--emb_size", str(EMB), "--batch_size", "2", "--workers", "0", "--no_progress"]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def in_process(module: object, argv: list[str]) -> None:
    code = run_main(module.main, module.get_args_parser(), argv)
    reset_script_loggers()
    assert code == 0


def written_since(folder: Path, pattern: str, start: float) -> Callable[[], bool]:
    """Whether a file matching ``pattern`` under ``folder`` was written after ``start``."""
    def check() -> bool:
        for path in folder.rglob(pattern):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime > start:
                    return True
        return False
    return check


def started(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def killed(argv: list[str], cwd: Path, seed: int, trigger: Callable[[], bool] | None, window: float,
           signum: int = signal.SIGKILL) -> tuple[int, str]:
    """Run ``argv`` and send it ``signum`` after a random delay of up to ``window`` seconds, counted from when
    ``trigger()`` first holds (or from the start); returns its exit code and stderr."""
    proc = started(argv, cwd)
    rng = random.Random(seed)
    try:
        deadline = time.monotonic() + 120
        while trigger is not None and proc.poll() is None and time.monotonic() < deadline and not trigger():
            time.sleep(0.002)
        time.sleep(rng.uniform(0, window))
        proc.send_signal(signum)
    finally:
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def cache_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.pth"))}


@pytest.fixture(scope="module")
def checkpoints(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different randomly initialised video models: the old cache comes from one, the new from the other."""
    folder = tmp_path_factory.mktemp("crash_ckpts")
    vocab = len(load_corpus(tiny_root / "VID" / "corpus.pth"))
    found = {}
    for name, seed in (("old", 0), ("new", 1)):
        torch.manual_seed(seed)
        model = build_grounding_model("video", vocab, SMALL_CFG, image_size=64, emb_size=EMB)
        found[name] = folder / f"{name}.pth"
        torch.save({"state_dict": model.state_dict()}, found[name])
    return found


def cache_args(root: Path, checkpoint: Path, cache: Path) -> list[str]:
    return [*flags(root), "--test", "--resume", str(checkpoint), "--cache", "--cache_dir", str(cache), "--overwrite",
            "--log_dir", str(cache.parent / "logs")]


@pytest.fixture(scope="module")
def caches(tiny_root: Path, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
           one_thread: None) -> dict[str, Path]:
    """The complete caches of the old and the new model."""
    folder = tmp_path_factory.mktemp("crash_caches")
    for name in ("old", "new"):
        in_process(test_video, cache_args(tiny_root, checkpoints[name], folder / name))
    return {"old": folder / "old", "new": folder / "new"}


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_cache_writing_leaves_the_old_or_the_new_cache(seed: int, tiny_root: Path,
                                                               checkpoints: dict[str, Path], caches: dict[str, Path],
                                                               tmp_path: Path) -> None:
    cache = Path(shutil.copytree(caches["old"], tmp_path / "cache", copy_function=shutil.copy2))
    old = cache_files(cache)
    new = {k: load_cache_entry(caches["new"] / k) for k in cache_files(caches["new"])}

    # seed 0 kills at a random moment of the whole run, the others once the new run has written a cache file
    trigger = None if seed == 0 else written_since(tmp_path, "*.pth", time.time())
    killed([str(REPO / "test_semantic_attention_cogrounding.py"), *cache_args(tiny_root, checkpoints["new"], cache)],
           tmp_path, seed, trigger, window=8.0 if seed == 0 else 0.05)

    now = cache_files(cache)
    if now != old:
        assert now.keys() == new.keys()
        assert check_cache_manifest(cache)
        for key, entry in new.items():
            assert all(torch.allclose(a, b) for a, b in zip(load_cache_entry(cache / key), entry))
    assert (cache / MANIFEST).is_file()

    in_process(test_video, cache_args(tiny_root, checkpoints["new"], cache))
    assert temporaries(tmp_path) == []


def train_args(root: Path, work: Path) -> list[str]:
    return [*flags(root), "--savename", "run", "--darknet_weights", "", "--save_dir", str(work / "saved_models"),
            "--log_dir", str(work / "logs")]


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """The checkpoints of a one-epoch run (the old outputs)."""
    work = tmp_path_factory.mktemp("crash_trained")
    in_process(train_video, [*train_args(tiny_root, work), "--nb_epoch", "1"])
    return work / "saved_models"


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_training_leaves_complete_checkpoints(seed: int, tiny_root: Path, trained: Path,
                                                     tmp_path: Path) -> None:
    shutil.copytree(trained, tmp_path / "saved_models")
    latest = tmp_path / "saved_models" / "run_checkpoint.pth.tar"
    old = latest.read_bytes()

    # seed 0 kills at a random moment, seed 1 as soon as a checkpoint is being written
    trigger = None if seed == 0 else written_since(tmp_path / "saved_models", ".run_*", time.time())
    killed([str(REPO / "train_semantic_attention_cogrounding.py"), *train_args(tiny_root, tmp_path),
            "--nb_epoch", "3", "--overwrite"], tmp_path, seed, trigger, window=10.0 if seed == 0 else 0.0)

    for path in (tmp_path / "saved_models").glob("run_*.pth.tar"):
        assert read_checkpoint(path)["epoch"] in (1, 2, 3)  # complete: a truncated file raises
    # the old checkpoint, or one the new run (--overwrite, from scratch) wrote completely after any of its epochs
    assert latest.read_bytes() == old or read_checkpoint(latest)["epoch"] in (1, 2, 3)

    in_process(train_video, [*train_args(tiny_root, tmp_path), "--nb_epoch", "1", "--overwrite"])
    assert temporaries(tmp_path) == []


# ------------------------------------------------------------------ Ctrl-C and SIGTERM, two writers at once

def same_cache(folder: Path, reference: Path) -> bool:
    """``folder`` holds the files of the cache ``reference``, with the same values."""
    files = cache_files(reference)
    return cache_files(folder).keys() == files.keys() and all(
        all(torch.allclose(a, b) for a, b in zip(load_cache_entry(folder / k), load_cache_entry(reference / k)))
        for k in files)


def finished(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """The exit code and stderr of ``proc`` once it ends."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def exists(path: Path) -> Callable[[], bool]:
    return path.exists


def interrupted_cleanly(code: int, err: str, signum: int, finished_complete: Callable[[], bool]) -> None:
    """Exit 130 with one ``interrupted: ...`` line; or the run had ended: exit 0, or killed by the signal while
    the interpreter shut down after its work (the default handlers are back then), its outputs complete."""
    assert code in (0, 130, -signum), err[-2000:]
    if code == 130:
        lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("interrupted: "), err[-2000:]
    else:
        assert finished_complete(), (code, err[-2000:])


def no_leftovers(folder: Path) -> None:
    assert temporaries(folder) == []
    assert sorted(p.name for p in folder.rglob(".*.lock")) == []


SIGNALS = [(signal.SIGINT, 3), (signal.SIGTERM, 1)]  # delays of 24% and 13% of the window


@pytest.mark.parametrize(("signum", "seed"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_interrupted_cache_writing_leaves_the_old_or_the_new_cache(signum: int, seed: int, tiny_root: Path,
                                                                  checkpoints: dict[str, Path],
                                                                  caches: dict[str, Path], tmp_path: Path) -> None:
    cache = Path(shutil.copytree(caches["old"], tmp_path / "cache", copy_function=shutil.copy2))
    old = cache_files(cache)
    code, err = killed([str(REPO / "test_semantic_attention_cogrounding.py"),
                        *cache_args(tiny_root, checkpoints["new"], cache)], tmp_path, seed,
                       exists(tmp_path / ".cache.lock"), window=1.5, signum=signum)
    interrupted_cleanly(code, err, signum, lambda: same_cache(cache, caches["new"]))
    assert cache_files(cache) == old or same_cache(cache, caches["new"])
    assert check_cache_manifest(cache)
    no_leftovers(tmp_path)


@pytest.mark.parametrize(("signum", "seed"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_leaves_complete_checkpoints(signum: int, seed: int, tiny_root: Path, trained: Path,
                                                         tmp_path: Path) -> None:
    shutil.copytree(trained, tmp_path / "saved_models")
    latest = tmp_path / "saved_models" / "run_checkpoint.pth.tar"
    old = latest.read_bytes()
    code, err = killed([str(REPO / "train_semantic_attention_cogrounding.py"), *train_args(tiny_root, tmp_path),
                        "--nb_epoch", "2", "--overwrite"], tmp_path, seed,
                       exists(latest.with_name(".run_checkpoint.pth.tar.lock")), window=6.0, signum=signum)
    interrupted_cleanly(code, err, signum, lambda: read_checkpoint(latest)["epoch"] == 2)
    assert latest.read_bytes() == old or read_checkpoint(latest)["epoch"] in (1, 2)
    if code == 130:
        assert f"kept {latest}" in err
    no_leftovers(tmp_path)


OLD_PHRASE, NEW_PHRASE = "the triangle left of the square", "the square right of the triangle"


def ground_args(root: Path, checkpoint: Path, phrase: str) -> list[str]:
    return [str(REPO / "ground.py"), str(root / "frames" / "test" / "vid_00000"), "--resume", str(checkpoint),
            "--corpus", str(root / "VID" / "corpus.pth"), "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size",
            str(EMB), "--no_progress", "--phrase", phrase, "--out_jsonl", "o.jsonl", "--out_video", "o.mp4"]


def grounded(folder: Path, phrase: str) -> bool:
    """``o.jsonl`` and ``o.mp4`` are the complete outputs of grounding ``phrase`` in the 4-frame test clip."""
    lines = (folder / "o.jsonl").read_text().splitlines()
    video = cv2.VideoCapture(str(folder / "o.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    video.release()
    return len(lines) == 4 and all(json.loads(line)["sentence"] == phrase for line in lines) and frames == 4


@pytest.mark.parametrize(("signum", "seed"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_interrupted_grounding_leaves_the_old_or_the_new_outputs(signum: int, seed: int, tiny_root: Path,
                                                                checkpoints: dict[str, Path], tmp_path: Path) -> None:
    assert finished(started(ground_args(tiny_root, checkpoints["old"], OLD_PHRASE), tmp_path), 120)[0] == 0
    old = {name: (tmp_path / name).read_bytes() for name in ("o.jsonl", "o.mp4")}
    code, err = killed([*ground_args(tiny_root, checkpoints["new"], NEW_PHRASE), "--overwrite"], tmp_path, seed,
                       exists(tmp_path / ".o.jsonl.lock"), window=1.0, signum=signum)
    interrupted_cleanly(code, err, signum, lambda: grounded(tmp_path, NEW_PHRASE))
    now = {name: (tmp_path / name).read_bytes() for name in old}
    assert now == old or grounded(tmp_path, NEW_PHRASE)
    no_leftovers(tmp_path)


def test_two_groundings_on_the_same_outputs_one_writes_them(tiny_root: Path, checkpoints: dict[str, Path],
                                                            tmp_path: Path) -> None:
    runs = [started(ground_args(tiny_root, checkpoints["new"], NEW_PHRASE), tmp_path) for _ in range(2)]
    results = sorted(finished(proc, 180) for proc in runs)
    (ok, _), (refused, err) = results
    assert (ok, refused) == (0, 2), results
    assert len(err.strip().splitlines()) == 1 and ("being written by another run" in err or "already exists" in err)
    assert grounded(tmp_path, NEW_PHRASE)
    no_leftovers(tmp_path)


def test_two_cache_runs_on_the_same_new_folder_one_writes_it(tiny_root: Path, checkpoints: dict[str, Path],
                                                            caches: dict[str, Path], tmp_path: Path) -> None:
    argv = [str(REPO / "test_semantic_attention_cogrounding.py"),
            *[a for a in cache_args(tiny_root, checkpoints["new"], tmp_path / "cache") if a != "--overwrite"]]
    runs = [started(argv, tmp_path) for _ in range(2)]
    results = sorted(finished(proc, 300) for proc in runs)
    (ok, _), (refused, err) = results
    assert (ok, refused) == (0, 2), results
    assert "--cache_dir" in err and ("being written by another run" in err or "already exists" in err)
    assert cache_files(tmp_path / "cache") == cache_files(caches["new"])
    assert check_cache_manifest(tmp_path / "cache")
    no_leftovers(tmp_path)
