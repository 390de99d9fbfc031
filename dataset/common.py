"""Loader pieces shared by the video and image datasets: index/corpus files, image paths and image reading."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from utils.io import UserInputError, safe_load
from utils.transforms import Rng, eval_frame, swap_left_right, to_tensor, train_frame
from utils.word_utils import Corpus, load_corpus

# EXIF orientations that rotate by 90 degrees (cv2.imread applies EXIF orientation, so sizes swap).
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def default_corpus_path(split_root: str | os.PathLike, dataset: str) -> Path:
    return Path(split_root) / dataset / "corpus.pth"


def load_default_corpus(split_root: str | os.PathLike, dataset: str) -> Corpus:
    """The dataset's corpus at ``<split_root>/<dataset>/corpus.pth`` (loaded safely)."""
    return load_corpus(default_corpus_path(split_root, dataset))


def load_index(path: Path, split: str) -> list:
    """Load an index file; a missing one is an error naming it and the split files that do exist beside it."""
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.glob("*.pth") if p.name != "corpus.pth") if folder.is_dir() else []
        where = f"index files in {folder}: {', '.join(found)}" if found else f"no index files in {folder}"
        raise UserInputError(f"index file for split {split!r} not found: {path} ({where})")
    index = safe_load(path, what="index file")
    if not isinstance(index, list) or not index:
        raise UserInputError(f"index file {path} must hold a non-empty list, got {type(index).__name__}")
    return index


def resolve_image_root(first_image: str, roots: Sequence[Path], index_path: Path) -> Path:
    """The first of ``roots`` under which the index's first image exists (a cheap check at build time).

    All images of an index are then read under that root, so a wrong ``--data_root`` fails immediately.
    """
    for root in roots:
        if (root / first_image).is_file():
            return root
    tried = ", ".join(str(root / first_image) for root in roots)
    raise UserInputError(f"image {first_image!r} listed in index file {index_path} not found (tried {tried})")


def read_rgb(path: str | os.PathLike, index_path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    ``cv2.IMREAD_COLOR`` (the reference's ``cv2.imread``) already turns grey, 4-channel and 16-bit images into
    3-channel 8-bit BGR. A missing or undecodable file (cv2 returns None) raises an error naming it and the index.
    """
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        state = "is missing" if not Path(path).is_file() else "cannot be decoded (corrupt or not an image)"
        raise UserInputError(f"image {path} (listed in index file {index_path}) {state}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(h, w)`` of an image as :func:`read_rgb` returns it, from the file header only (no decoding)."""
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
            w, h = h, w
    return h, w


def int_box(box: Any) -> np.ndarray:
    """quirk: the reference casts annotation boxes to int (truncation toward zero) before anything else."""
    return np.asarray(box, dtype=np.float64).astype(np.int64)


def load_frame(path: Path, box: np.ndarray, index_path: Path, size: int, augment: bool, flip: bool, rng: Rng
               ) -> tuple[tuple[np.ndarray, np.ndarray, float, float, float], tuple[int, int]]:
    """Read one image and prepare it and its (int xyxy, see :func:`int_box`) box: docs/behaviour.md §6 augmentation or
    §7.

    Returns ``((img, box, ratio, dw, dh), (h, w))`` with the original size of the decoded image.
    """
    img = read_rgb(path, index_path)
    orig = (img.shape[0], img.shape[1])
    frame = train_frame(img, box, size, flip, rng) if augment else eval_frame(img, box, size)
    return frame, orig


def encode_phrase(phrase: str, corpus: Corpus | None, max_len: int, flip: bool, source: str
                  ) -> tuple[str, torch.Tensor]:
    """Lower-case (and for a flipped sample swap left/right) a phrase, then tokenise it: ``(phrase, (L,) ids)``.

    Works on a copy: the stored index is never modified (the reference tokenised in place). ``source`` names
    where the phrase comes from in the error for a phrase that is not a non-empty string.
    """
    if corpus is None:
        raise ValueError("this dataset was built without a corpus: it gives metadata only, not items")
    if not isinstance(phrase, str) or not phrase.strip():
        raise UserInputError(f"{source}: the phrase must be a non-empty string, got {phrase!r}")
    phrase = phrase.lower()
    if flip:
        phrase = swap_left_right(phrase)
    return phrase, corpus.tokenize(phrase, max_len)


def stack_frames(frames: Sequence[tuple[np.ndarray, np.ndarray, float, float, float]],
                 sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Tensors of T prepared frames ``(img, box, ratio, dw, dh)`` and their original ``(h, w)``."""
    imgs, boxes, ratio, dw, dh = zip(*frames)
    return {
        "images": to_tensor(np.stack(imgs)),  # (T, 3, S, S)
        "boxes": torch.tensor(np.stack(boxes), dtype=torch.float32),  # (T, 4)
        "ratio": torch.tensor(ratio, dtype=torch.float32),  # (T,)
        "dw": torch.tensor(dw, dtype=torch.float32),
        "dh": torch.tensor(dh, dtype=torch.float32),
        "orig_size": torch.tensor(sizes, dtype=torch.long),  # (T, 2) (h, w)
    }
