"""Property-based: the index loaders, the corpus loader and the cache reader fed with random structures either
load them or raise ``UserInputError`` (a one-line error naming the file), never another exception."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cache import CACHE_KEYS, load_cache_entry
from dataset.referit_loader import ReferDataset
from dataset.vid_loader import VIDDataset
from utils.io import UserInputError
from utils.word_utils import Corpus, Dictionary, build_corpus, load_corpus, save_corpus

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
IMAGE = "a.jpg"  # the one image that exists (48 x 64)

scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8) | st.sampled_from([IMAGE, "missing.jpg", "the red car", ""]))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner, inner)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=24)
numbers = st.integers(-100, 200) | st.floats(-100, 200) | st.floats(allow_nan=True, allow_infinity=True)
boxes = st.lists(numbers, min_size=0, max_size=5) | anything
phrases = st.sampled_from(["the red car", "zzz", "", "  ", "a red car on the left."]) | anything
paths = st.sampled_from([IMAGE, IMAGE, "missing.jpg"]) | anything
frames = st.tuples(paths, boxes, phrases).map(list) | anything
videos = st.lists(st.lists(frames, min_size=0, max_size=4), min_size=0, max_size=3) | anything
items = (st.tuples(paths, boxes, phrases) | st.tuples(paths, st.just(""), boxes, phrases, st.just([]))
         | anything)
refer_index = st.lists(items, min_size=0, max_size=4) | anything


@pytest.fixture(scope="module")
def folder() -> Path:
    root = Path(tempfile.mkdtemp(prefix="loader_properties_"))
    assert cv2.imwrite(str(root / IMAGE), np.full((48, 64, 3), 128, np.uint8))
    (root / "VID").mkdir()
    (root / "synthvid").mkdir()
    return root


def corpus() -> Corpus:
    return build_corpus(["the red car", "a red car on the left"])


def must_load_or_refuse(build: Any) -> Any:
    try:
        return build()
    except UserInputError as err:
        assert "\n" not in str(err)
        return None


@SETTINGS
@given(index=videos)
def test_video_index_loads_or_is_refused(folder: Path, index: Any) -> None:
    torch.save(index, folder / "VID" / "VID_video_level_test.pth")
    dataset = must_load_or_refuse(lambda: VIDDataset(folder, folder, "VID", "test", corpus(), image_size=64,
                                                     num_frames=2, skip_empty_boxes=True))
    if dataset is not None and len(dataset):
        must_load_or_refuse(lambda: dataset[0])
        must_load_or_refuse(lambda: dataset.frame_meta(len(dataset) - 1))


@SETTINGS
@given(index=refer_index)
def test_image_index_loads_or_is_refused(folder: Path, index: Any) -> None:
    torch.save(index, folder / "synthvid" / "synthvid_test.pth")
    dataset = must_load_or_refuse(lambda: ReferDataset(folder, folder, "synthvid", "test", corpus(), image_size=64))
    if dataset is not None and len(dataset):
        must_load_or_refuse(lambda: dataset[len(dataset) - 1])


def corpus_with(words: Any, index: Any) -> Corpus:
    built = Corpus()
    built.dictionary = Dictionary()
    built.dictionary.idx2word, built.dictionary.word2idx = words, index
    return built


words = st.lists(st.sampled_from(["<pad>", "<unk>", "<eos>", "red", "car"]) | anything, max_size=5) | anything
corpora = (anything | st.builds(corpus_with, words, st.dictionaries(st.text(max_size=5), numbers, max_size=4))
           | st.builds(corpus_with, words, anything))


@SETTINGS
@given(content=corpora)
def test_corpus_loads_or_is_refused(folder: Path, content: Any) -> None:
    path = folder / "corpus.pth"
    save_corpus(content, path)
    loaded = must_load_or_refuse(lambda: load_corpus(path))
    if loaded is not None:
        loaded.tokenize("the red car", 5)


dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool, torch.complex64])
tensors = st.builds(lambda shape, dtype, fill: torch.full(shape, fill if dtype.is_floating_point else 1.0,
                                                         dtype=torch.float64).to(dtype),
                    st.lists(st.integers(0, 5), max_size=3).map(tuple), dtypes,
                    st.floats(allow_nan=True, allow_infinity=True))
values = tensors | st.lists(numbers | scalars, max_size=6) | anything
entries = st.fixed_dictionaries({}, optional={key: values for key in CACHE_KEYS}) | anything


@SETTINGS
@given(entry=entries)
def test_cache_file_loads_or_is_refused(folder: Path, entry: Any) -> None:
    path = folder / "cache.pth"
    torch.save(entry, path)
    loaded = must_load_or_refuse(lambda: load_cache_entry(path))
    if loaded is not None:
        assert all(torch.isfinite(part).all() for part in loaded)
