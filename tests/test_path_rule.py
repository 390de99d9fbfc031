"""The one rule for every entry point's paths (utils.io.check_paths) and the output locks (docs/behaviour.md §10).

Property tests: any output equal to an input, or inside an input folder (also through a symbolic link), is
refused with a line naming both flags, whatever its kind; so are two outputs on one path; distinct unrelated
paths pass.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.io import FILE, FOLDER, REPLACED_FOLDER, OutputLock, UserInputError, check_paths, lock_outputs, lock_path

names = st.sampled_from(["a", "b", "c", "data", "out", "x.mp4", "y.jsonl"])
parts = st.lists(names, min_size=1, max_size=3)
kinds = st.sampled_from([FILE, FOLDER, REPLACED_FOLDER])


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def made(root: Path, rel: list[str], is_dir: bool) -> Path:
    path = root.joinpath(*rel)
    if is_dir:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"input")
    return path


def reached(root: Path, path: Path, via_link: bool) -> Path:
    """``path``, or a symbolic link ``root/link`` to it."""
    if not via_link:
        return path
    (root / "link").symlink_to(path)
    return root / "link"


def refused_naming(inputs: dict, outputs: dict, *flags: str) -> None:
    with pytest.raises(UserInputError) as err:
        check_paths(inputs, outputs)
    line = str(err.value)
    assert "\n" not in line
    for flag in flags:
        assert flag in line, line


@settings(max_examples=30, deadline=None)
@given(rel=parts, is_dir=st.booleans(), kind=kinds, via_link=st.booleans())
def test_an_output_on_an_input_is_refused(rel: list[str], is_dir: bool, kind: str, via_link: bool) -> None:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        source = made(root / "in", rel, is_dir)
        target = reached(root, source, via_link)
        refused_naming({"--input": source}, {"--output": (target, kind)}, "--output", "--input")


@settings(max_examples=30, deadline=None)
@given(rel=parts, below=parts, kind=kinds, via_link=st.booleans())
def test_an_output_inside_an_input_folder_is_refused(rel: list[str], below: list[str], kind: str,
                                                     via_link: bool) -> None:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        source = made(root / "in", rel, True)
        target = reached(root, source, via_link).joinpath(*below)
        refused_naming({"--data_root": [root / "other", source]}, {"--save_pred": (target, kind)}, "--save_pred",
                       "--data_root")


@settings(max_examples=20, deadline=None)
@given(rel=parts, below=parts)
def test_an_input_inside_a_replaced_output_folder_is_refused(rel: list[str], below: list[str]) -> None:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        source = made(root / "out", [*rel, *below], False)
        refused_naming({"--resume": source}, {"--cache_dir": (root / "out" / Path(*rel), REPLACED_FOLDER)},
                       "--cache_dir", "--resume")


@settings(max_examples=20, deadline=None)
@given(rel=parts, kind_a=st.sampled_from([FILE, REPLACED_FOLDER]), kind_b=kinds)
def test_two_outputs_on_one_path_are_refused(rel: list[str], kind_a: str, kind_b: str) -> None:
    with tempfile.TemporaryDirectory() as name:
        path = Path(name).joinpath(*rel)
        refused_naming({}, {"--out_jsonl": (path, kind_a), "--out_video": (path, kind_b)}, "--out_jsonl",
                       "--out_video")


@settings(max_examples=20, deadline=None)
@given(rel=parts, below=parts, kind=kinds)
def test_an_output_inside_a_replaced_output_is_refused(rel: list[str], below: list[str], kind: str) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name).joinpath(*rel)
        refused_naming({}, {"--save_plot": (folder.joinpath(*below), kind), "--cache_dir": (folder, REPLACED_FOLDER)},
                       "--save_plot", "--cache_dir")


@settings(max_examples=30, deadline=None)
@given(inputs=st.lists(parts, min_size=1, max_size=3, unique_by=tuple),
       outputs=st.lists(st.tuples(names, kinds), min_size=1, max_size=3, unique_by=lambda o: o[0]))
def test_distinct_unrelated_paths_pass(inputs: list[list[str]], outputs: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        sources = {f"--in{i}": made(root / f"in{i}", rel, i % 2 == 0) for i, rel in enumerate(inputs)}
        check_paths(sources, {f"--out{i}": (root / "results" / out, kind) for i, (out, kind) in enumerate(outputs)})


def test_two_flags_may_write_into_one_folder(folder: Path) -> None:
    check_paths({}, {"--log_dir": (folder / "run", FOLDER), "--save_dir": (folder / "run", FOLDER)})


def test_a_hard_link_to_an_input_is_the_input(folder: Path) -> None:
    (folder / "clip.mp4").write_bytes(b"video")
    (folder / "copy.mp4").hardlink_to(folder / "clip.mp4")
    refused_naming({"inputs": [folder / "clip.mp4"]}, {"--out_video": (folder / "copy.mp4", FILE)}, "--out_video",
                   "inputs")


def test_a_second_lock_on_an_output_names_its_flag_and_the_holder(folder: Path) -> None:
    with OutputLock(folder / "o.jsonl", "--out_jsonl"):
        with pytest.raises(UserInputError, match=r"--out_jsonl .*o\.jsonl is being written by another run \(process"):
            OutputLock(folder / "o.jsonl", "--out_jsonl").__enter__()
    assert not lock_path(folder / "o.jsonl").exists()
    with OutputLock(folder / "o.jsonl", "--out_jsonl"):  # free again
        pass


def test_the_lock_of_a_killed_writer_is_free(folder: Path) -> None:
    """The kernel drops a dead process's lock: its lock file stays, and does not block the next run."""
    code = ("import sys, os; from utils.io import OutputLock; "
            f"OutputLock({str(folder / 'cache')!r}, '--cache_dir').__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
    assert lock_path(folder / "cache").exists()
    with lock_outputs({"--cache_dir": folder / "cache"}):
        pass
    assert not lock_path(folder / "cache").exists()


def test_when_one_output_is_taken_no_lock_is_kept(folder: Path) -> None:
    with OutputLock(folder / "b", "--b"), pytest.raises(UserInputError, match="--b"):
        lock_outputs({"--a": folder / "a", "--b": folder / "b"})
    with lock_outputs({"--a": folder / "a"}):
        pass
