"""Progress output: a tqdm bar on a terminal; in a pipe or a file, a few plain lines, not one per item."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from tests.test_grounder import write_checkpoint
from utils.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_a_line_per_interval_not_per_item():
    log = io.StringIO()
    start = time.monotonic()
    for _ in progress_bar(range(40), desc="evaluate", unit="batch", file=log, interval=0.05):
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 2 <= len(lines) <= elapsed / 0.05 + 1 < 40
    assert lines[-1].startswith("evaluate: 100% 40/40 [")


def test_a_postfix_at_every_step_does_not_add_lines():
    log = io.StringIO()
    bar = progress_bar(range(200), desc="epoch 0", unit="batch", file=log)
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    assert log.getvalue().count("\n") == 1 and "loss=0.005" in log.getvalue()


def test_a_short_run_in_a_pipe_writes_its_last_line_only():
    log = io.StringIO()
    with progress_bar(total=None, desc="grounded", unit="frame", file=log) as bar:
        for _ in range(25):
            bar.update()
    assert log.getvalue().startswith("grounded: 25frame [") and log.getvalue().count("\n") == 1


def test_a_terminal_gets_tqdms_bar():
    screen = Terminal()
    for _ in progress_bar(range(3), desc="epoch 0", file=screen, mininterval=0):
        pass
    assert screen.getvalue().count("\r") >= 3 and "3/3" in screen.getvalue()


def test_a_disabled_bar_writes_nothing():
    for stream in (io.StringIO(), Terminal()):
        for _ in progress_bar(range(3), enabled=False, file=stream):
            pass
        assert stream.getvalue() == ""


def test_ground_py_in_a_pipe_logs_a_line_not_one_per_frame(tiny_root, tmp_path):  # noqa: ANN001
    """ground.py with its output piped, as in a log: 48 frames grounded one per batch give one progress line."""
    frames = tmp_path / "frames"
    frames.mkdir()
    noise = np.random.default_rng(0)
    for t in range(48):
        cv2.imwrite(str(frames / f"{t:03d}.jpg"), noise.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    ckpt = write_checkpoint(tmp_path / "image.pth.tar", "image", tiny_root, "synthvid")
    run = subprocess.run([sys.executable, "ground.py", str(frames), "--resume", str(ckpt), "--phrase", "the circle",
                          "--batch_size", "1", "--out_jsonl", str(tmp_path / "out.jsonl")],
                         cwd=REPO, capture_output=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = (run.stdout + run.stderr).decode()  # bytes: text mode would turn tqdm's carriage returns into lines
    assert run.returncode == 0, output
    progress = [line for line in output.splitlines() if line.startswith("grounded:")]
    assert "\r" not in output
    assert len(progress) <= 2 and progress[-1].startswith("grounded: 100% 48/48 [")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 48
