"""Fixtures shared by the engine and script tests: one tiny synthetic video set per session."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dataset.synthvid import SynthConfig, generate
from tests.helpers import reset_script_loggers

# 3 / 1 / 2 clips of 4-6 frames, one expression each; with this seed the test split has a 4-frame and a
# 5-frame video, so 5-frame windows are clipped at both ends of both videos.
TINY = SynthConfig(seed=3, train_videos=3, val_videos=1, test_videos=2, min_frames=4, max_frames=6,
                   expressions_per_video=1, image_stride=2)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set in the VID format (``VID/``) and as images (``synthvid/``), read-only for the tests."""
    root = tmp_path_factory.mktemp("tiny_synthvid")
    generate(root, TINY)
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module's in-process runs: the machine has 2 cores and other processes on them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def close_script_logs() -> Iterator[None]:
    """After every test, the log handlers an in-process script run installed are closed and removed (they hold the
    test's captured output, which is closed once the test ends)."""
    yield
    reset_script_loggers()
