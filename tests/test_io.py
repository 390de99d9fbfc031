"""utils.io and utils.cli: temporaries of killed writes, whole-folder replacement, load errors, worker errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils.cli import one_line
from utils.io import UserInputError, atomic_save, publish_folder, remove_stale_temporaries, safe_load, staging_folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_write_removes_temporaries_of_killed_writers(tmp_path: Path) -> None:
    stale = tmp_path / f".ckpt.pth.{dead_pid()}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    atomic_save({"a": torch.zeros(2)}, tmp_path / "ckpt.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]


def test_temporaries_of_running_writers_and_other_files_are_kept(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as running:
        try:
            kept = [tmp_path / f".ckpt.pth.{running.pid}.abc.tmp",  # a write in progress in another process
                    tmp_path / f".other.pth.{dead_pid()}.abc.tmp",  # another file's temporary
                    tmp_path / ".ckpt.pth.notapid.tmp",  # not our pattern
                    tmp_path / "ckpt.pth.tmp"]
            for path in kept:
                path.write_bytes(b"x")
            assert remove_stale_temporaries(tmp_path, "ckpt.pth") == []
            assert all(path.exists() for path in kept)
        finally:
            running.kill()


def test_a_published_folder_replaces_the_old_one_whole(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old.jpg").write_bytes(b"old")
    staged = staging_folder(tmp_path / "plots")
    (staged / "new.jpg").write_bytes(b"new")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["old.jpg"]  # untouched until published
    publish_folder(staged, tmp_path / "plots")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new.jpg", "plots"]


def test_a_stale_staging_folder_is_removed_by_the_next_staging(tmp_path: Path) -> None:
    stale = tmp_path / f".cache.{dead_pid()}.xyz.tmp"
    (stale / "vid").mkdir(parents=True)
    (stale / "vid" / "0_0.pth").write_bytes(b"x")
    staged = staging_folder(tmp_path / "cache")
    assert [p.name for p in tmp_path.iterdir()] == [staged.name]


def test_random_bytes_are_not_a_valid_file_and_no_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / "r.pth"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(UserInputError) as err:
        safe_load(path, what="checkpoint")
    assert str(err.value) == (f"checkpoint {path} is not a valid checkpoint: not a file written by torch.save, "
                              "or damaged")


class Payload:
    def __reduce__(self) -> tuple:
        return os.system, ("echo never",)


def test_a_malicious_pickle_is_refused_naming_its_global(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(UserInputError) as err:
        safe_load(path, what="checkpoint")
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} was refused: it names {os.system.__module__}.system, which is "
                              "outside the allow-list")
    assert "weights_only" not in message and "will likely succeed" not in message


def test_an_error_raised_in_a_dataloader_worker_is_its_one_line() -> None:
    wrapped = UserInputError("Caught UserInputError in DataLoader worker process 0.\nOriginal Traceback (most "
                             "recent call last):\n  File \"x.py\", line 1, in f\n    raise UserInputError(m)\n"
                             "utils.io.UserInputError: image a.jpg (listed in index file i.pth) is missing")
    assert one_line(wrapped) == "image a.jpg (listed in index file i.pth) is missing"
    assert one_line(UserInputError("plain")) == "plain"
