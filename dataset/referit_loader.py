"""Image grounding datasets (docs/behaviour.md §1): RefCOCO (unc), RefCOCO+ (unc+), RefCOCOg (gref, umd splits),
ReferItGame
(referit), Flickr30k Entities (flickr), and ``synthvid`` (the synthetic video set exported image by image).

Index ``<split_root>/<dataset>/<dataset>_<split>.pth`` is a list of ``(image_file, mask_file, box, phrase,
attributes)`` or ``(image_file, box, phrase)`` items (either is accepted, by length). Boxes are ``[x, y, w, h]``
for the COCO family and synthvid, ``[x1, y1, x2, y2]`` for referit and flickr; image files are relative to the
dataset's image folder under ``data_root``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from dataset.common import (
    check_boxes,
    check_image_paths,
    check_phrases,
    encode_phrase,
    int_box,
    load_frame,
    load_index,
    resolve_image_root,
    stack_frames,
    warn_empty_boxes,
)
from dataset.names import IMAGE_SPLITS
from utils.io import UserInputError
from utils.transforms import Rng
from utils.word_utils import Corpus

_COCO_IMAGES = "other/images/mscoco/images/train2014"
IMAGE_DIRS = {"unc": _COCO_IMAGES, "unc+": _COCO_IMAGES, "gref": _COCO_IMAGES, "referit": "referit/images",
              "flickr": "Flickr30k/flickr30k_images", "synthvid": "."}
XYWH_DATASETS = ("unc", "unc+", "gref", "synthvid")


def refer_index_path(split_root: str | os.PathLike, dataset: str, split: str) -> Path:
    return Path(split_root) / dataset / f"{dataset}_{split}.pth"


def corner_box(box: Any, xywh: bool) -> np.ndarray:
    """Annotation box -> int ``[x1, y1, x2, y2]``; quirk: cast to int first, then ``x2 = x + w`` (docs/behaviour.md
    §1)."""
    box = int_box(box)
    if xywh:
        box[2:] += box[:2]
    return box


def unpack_item(item: Any, i: int, index_path: Path) -> tuple[str, Any, str]:
    """``(image_file, box, phrase)`` of a 5-tuple ``(image, mask, box, phrase, attributes)`` or 3-tuple item."""
    if isinstance(item, (list, tuple)) and len(item) == 5:
        return item[0], item[2], item[3]
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return item[0], item[1], item[2]
    raise UserInputError(f"index file {index_path}: item {i} must be (image, mask, box, phrase, attributes) "
                         f"or (image, box, phrase), got {item!r:.200}")


class ReferDataset(Dataset):
    """One referring expression per sample, in the video datasets' layout with one frame (T = 1).

    Items: ``images`` (1, 3, S, S) float32, ``word_id`` (L,) long, ``boxes`` (1, 4) float32 letterboxed xyxy,
    ``letterbox`` (:class:`utils.letterbox.Letterbox`, fields (1,)), ``index`` int, ``phrase`` str (lower-cased,
    possibly flip-swapped, as tokenised), ``image_path`` str (as in the index). ``rng`` as in ``VIDDataset``.
    """

    def __init__(self, data_root: str | os.PathLike, split_root: str | os.PathLike, dataset: str, split: str,
                 corpus: Corpus, image_size: int = 256, augment: bool = False, max_query_len: int = 20,
                 rng: Rng | None = None, skip_empty_boxes: bool = False) -> None:
        if dataset not in IMAGE_SPLITS:
            raise UserInputError(f"unknown image dataset {dataset!r}; expected one of {', '.join(IMAGE_SPLITS)}")
        if split not in IMAGE_SPLITS[dataset]:
            raise UserInputError(f"unknown split {split!r} for {dataset}; expected one of "
                                 f"{', '.join(IMAGE_SPLITS[dataset])}")
        self.index_path = refer_index_path(split_root, dataset, split)
        self.samples: list = load_index(self.index_path, split)
        fields = [unpack_item(item, i, self.index_path) for i, item in enumerate(self.samples)]
        check_image_paths([image for image, _, _ in fields], self._source)
        empty = check_boxes([box for _, box, _ in fields], dataset in XYWH_DATASETS, self._source)
        check_phrases([phrase for _, _, phrase in fields], corpus, self.index_path, self._source, max_query_len)
        warn_empty_boxes(empty, self.index_path, self._source, skip_empty_boxes)
        if skip_empty_boxes:
            self.samples = [item for item, e in zip(self.samples, empty.tolist()) if not e]
        self.root = resolve_image_root(unpack_item(self.samples[0], 0, self.index_path)[0],
                                       [Path(data_root) / IMAGE_DIRS[dataset]], self.index_path)
        self.xywh = dataset in XYWH_DATASETS
        self.corpus = corpus
        self.image_size = image_size
        self.augment = augment
        self.max_query_len = max_query_len
        self._rng = rng

    @property
    def rng(self) -> Rng:
        return random if self._rng is None else self._rng

    def __len__(self) -> int:
        return len(self.samples)

    def _source(self, i: int) -> str:
        return f"index file {self.index_path}, item {i}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_file, box, phrase = unpack_item(self.samples[index], index, self.index_path)
        flip = self.augment and self.rng.random() > 0.5
        phrase, word_id = encode_phrase(phrase, self.corpus, self.max_query_len, flip, self._source(index))
        frame, size = load_frame(self.root / image_file, corner_box(box, self.xywh), self.index_path,
                                 self.image_size, self.augment, flip, self.rng, self._source(index))
        item = stack_frames([frame], [size])  # a one-frame sample, the video datasets' layout
        item.update(word_id=word_id, index=index, phrase=phrase, image_path=image_file)
        return item
