"""Loader pieces shared by the video and image datasets: index/corpus files, image paths and image reading."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from utils.io import UserInputError, check_not_folder, safe_load
from utils.letterbox import Letterbox
from utils.transforms import Rng, eval_frame, swap_left_right, to_tensor, train_frame
from utils.word_utils import Corpus, has_known_word, read_tokens

logger = logging.getLogger(__name__)

# EXIF orientations that rotate by 90 degrees (cv2.imread applies EXIF orientation, so sizes swap).
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
JPEG_TAIL_BYTES = 4096  # where a complete JPEG's end-of-image marker must be (allowing trailing padding)
MIN_IMAGE_SIDE = 2  # a frame one pixel wide or high holds no box (its ground truth letterboxes to nonsense)
MAX_COORD = 2**31  # box coordinates beyond this are no pixel positions (and overflow the int cast)


def default_corpus_path(split_root: str | os.PathLike, dataset: str) -> Path:
    return Path(split_root) / dataset / "corpus.pth"


def load_index(path: Path, split: str) -> list:
    """Load an index file; a missing one is an error naming it and the split files that do exist beside it."""
    check_not_folder(path, "index file")
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


def check_image_file(path: str | os.PathLike, index_path: str | os.PathLike | None = None) -> None:
    """A missing file, or a JPEG without its end-of-image marker (truncated), is an error naming both files.

    OpenCV and PIL decode a truncated JPEG without an error (libjpeg fills the rest grey and only warns), so
    the marker is checked: in a complete JPEG ``FF D9`` ends the file (up to some padding), and it cannot occur
    inside the entropy-coded data, where every ``FF`` byte is followed by ``00`` or a restart marker.
    """
    path = Path(path)
    listed = f" (listed in index file {index_path})" if index_path is not None else ""
    try:
        with path.open("rb") as f:
            head = f.read(2)
            f.seek(max(0, os.fstat(f.fileno()).st_size - JPEG_TAIL_BYTES))
            tail = f.read()
    except IsADirectoryError:
        raise UserInputError(f"image {path}{listed} is a folder; expected an image file") from None
    except OSError:
        raise UserInputError(f"image {path}{listed} is missing") from None
    if head == JPEG_START and JPEG_END not in tail:
        raise UserInputError(f"image {path}{listed} cannot be decoded: a truncated or damaged JPEG "
                             "(no end-of-image marker)")


def read_rgb(path: str | os.PathLike, index_path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    ``cv2.IMREAD_COLOR`` (the reference's ``cv2.imread``) already turns grey, 4-channel and 16-bit images into
    3-channel 8-bit BGR. A missing, truncated (:func:`check_image_file`) or undecodable file (cv2 returns None)
    raises an error naming it and the index.
    """
    check_image_file(path, index_path)
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserInputError(f"image {path} (listed in index file {index_path}) cannot be decoded "
                             "(corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike, index_path: str | os.PathLike) -> tuple[int, int]:
    """``(h, w)`` of an image as :func:`read_rgb` returns it, from the file header only (no decoding)."""
    check_image_file(path, index_path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
                w, h = h, w
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
        raise UserInputError(f"image {path} (listed in index file {index_path}) cannot be decoded "
                             "(corrupt or not an image)") from None
    return h, w


def check_box_in_image(box: np.ndarray, h: int, w: int, source: str) -> None:
    """The frame is big enough to ground in and the (int xyxy) box overlaps it; else an error naming ``source``."""
    if min(h, w) < MIN_IMAGE_SIDE:
        raise UserInputError(f"{source}: the image is {w}x{h} px, too small to ground in "
                             f"(at least {MIN_IMAGE_SIDE} px a side)")
    x1, y1, x2, y2 = box.tolist()
    if x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
        raise UserInputError(f"{source}: box [x1, y1, x2, y2] = {[x1, y1, x2, y2]} lies outside the {w}x{h} image")


def check_boxes(boxes: Sequence[Any], xywh: bool, describe: Callable[[int], str]) -> np.ndarray:
    """Validate the annotation boxes of an index when it is loaded (docs/behaviour.md §10).

    An error, naming ``describe(i)`` and the box: not 4 numbers, NaN/inf or beyond any pixel position, negative
    width or height (inverted corners), a box wholly left of or above the image. Returned, to be counted and
    warned about by the dataset: the mask of boxes with zero width or height after the reference's int cast
    (:func:`int_box`), as (N,) bool. Whether the box overlaps its image is checked when the image is read.
    """
    if not len(boxes):
        return np.zeros(0, dtype=bool)
    try:
        values = np.asarray(boxes, dtype=np.float64)
        shaped = values.ndim == 2 and values.shape[1] == 4
    except (ValueError, TypeError):
        shaped = False
    if not shaped:
        for i, box in enumerate(boxes):
            try:
                if np.asarray(box, dtype=np.float64).shape == (4,):
                    continue
            except (ValueError, TypeError):
                pass
            raise UserInputError(f"{describe(i)}: box {box!r:.100} must be 4 numbers "
                                 f"{'[x, y, w, h]' if xywh else '[x1, y1, x2, y2]'}")
    bad = ~(np.isfinite(values) & (np.abs(values) < MAX_COORD)).all(1)
    if bad.any():
        i = int(bad.argmax())
        raise UserInputError(f"{describe(i)}: box {boxes[i]!r:.100} has a NaN, infinite or out-of-range value")
    inverted = (values[:, 2:] < 0).any(1) if xywh else (values[:, 2:] < values[:, :2]).any(1)
    if inverted.any():
        i = int(inverted.argmax())
        what = "a negative width or height" if xywh else "x2 < x1 or y2 < y1 (inverted corners)"
        raise UserInputError(f"{describe(i)}: box {list(boxes[i])} has {what}")
    corners = values.astype(np.int64)
    if xywh:
        corners[:, 2:] += corners[:, :2]
    outside = (corners[:, 2:] <= 0).any(1)
    if outside.any():
        i = int(outside.argmax())
        raise UserInputError(f"{describe(i)}: box {list(boxes[i])} lies wholly left of or above the image")
    return (corners[:, 2:] <= corners[:, :2]).any(1)


def warn_empty_boxes(empty: np.ndarray, index_path: Path, describe: Callable[[int], str], skipped: bool) -> None:
    """One summary warning for the boxes :func:`check_boxes` found empty (none: no warning)."""
    if not empty.any():
        return
    first = int(empty.argmax())
    what = ("skipped for training (their loss targets are degenerate)" if skipped
            else "kept and scored (as misses, as the reference does)")
    logger.warning("warning: index file %s: %d of %d boxes have zero width or height after the int cast, "
                   "e.g. %s; they are %s", index_path, int(empty.sum()), len(empty), describe(first), what)


def warn_long_phrases(phrases: Sequence[Any], index_path: Path, max_len: int) -> None:
    """One warning for the distinct phrases of an index that are cut at ``max_len`` tokens, with an example."""
    if max_len <= 0:
        return
    cut = {}
    for phrase in dict.fromkeys(p for p in phrases if isinstance(p, str) and p.strip()):
        dropped = read_tokens(phrase.lower(), max_len)[1]
        if dropped:
            cut[phrase] = dropped
    if cut:
        example, dropped = next(iter(cut.items()))
        logger.warning("warning: index file %s: %d distinct phrase(s) are longer than --time %d tokens and are cut, "
                       "e.g. %r loses its last %d token(s)", index_path, len(cut), max_len, example, dropped)


def int_box(box: Any) -> np.ndarray:
    """quirk: the reference casts annotation boxes to int (truncation toward zero) before anything else."""
    return np.asarray(box, dtype=np.float64).astype(np.int64)


def check_image_paths(paths: Sequence[Any], describe: Callable[[int], str]) -> None:
    """Every image path of an index is a non-empty string (else an error naming the entry)."""
    for i, path in enumerate(paths):
        if not isinstance(path, str) or not path.strip():
            raise UserInputError(f"{describe(i)}: the image path must be a non-empty string, got {path!r:.100}")


def check_phrases(phrases: Sequence[Any], corpus: Corpus | None, index_path: Path,
                  describe: Callable[[int], str], max_len: int = 0) -> None:
    """A phrase that is not a non-empty string is an error; phrases without a word of ``corpus`` get one warning,
    and so do phrases longer than ``max_len`` tokens (``--time``; their last tokens are not read).

    A phrase without a known word is grounded from ``<unk>`` tokens alone (a guess): a vocabulary from another
    dataset?
    """
    warn_long_phrases(phrases, index_path, max_len)
    unknown = []
    seen: dict[str, bool] = {}
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str) or not phrase.strip():
            raise UserInputError(f"{describe(i)}: the phrase must be a non-empty string, got {phrase!r:.100}")
        if corpus is not None:
            if phrase not in seen:
                seen[phrase] = has_known_word(corpus, phrase.lower(), max_len)
            if not seen[phrase]:
                unknown.append(i)
    if unknown:
        logger.warning("warning: index file %s: %d of %d phrases have no word in the corpus, e.g. %s: %r; they are "
                       "grounded from <unk> alone (is --corpus the vocabulary of this dataset?)", index_path,
                       len(unknown), len(phrases), describe(unknown[0]), phrases[unknown[0]])


def load_frame(path: Path, box: np.ndarray, index_path: Path, size: int, augment: bool, flip: bool, rng: Rng,
               source: str) -> tuple[tuple[np.ndarray, np.ndarray, float, float, float], tuple[int, int]]:
    """Read one image and prepare it and its (int xyxy, see :func:`int_box`) box: docs/behaviour.md §6 augmentation
    or §7. ``source`` names the box in errors (:func:`check_box_in_image`).

    Returns ``((img, box, ratio, dw, dh), (h, w))`` with the original size of the decoded image.
    """
    img = read_rgb(path, index_path)
    orig = (img.shape[0], img.shape[1])
    check_box_in_image(box, *orig, source)
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
        "letterbox": Letterbox.build(ratio, dw, dh, sizes),  # fields (T,), orig_size (T, 2)
    }
