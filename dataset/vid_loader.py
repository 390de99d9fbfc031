"""Video grounding datasets in the VID-Sentence format (docs/behaviour.md §1): VID-Sentence and LiOTB.

The index ``<split_root>/<dataset>/<dataset>_video_level_<split>.pth`` is ``list[video]``, ``video =
list[(image_path, [x1, y1, x2, y2], phrase)]``. Every frame of every video is one sample, in order; sample
``(v, t)`` is the window :func:`utils.windows.window_indices` ``(t, n, num_frames)`` of video ``v`` with frame
``t``'s phrase.
Training uses pairs (``num_frames=2``: frames t-1, t), evaluation 5-frame windows (centre index 2).
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dataset.common import (
    check_box_in_image,
    check_boxes,
    check_image_paths,
    check_phrases,
    encode_phrase,
    image_size,
    int_box,
    load_frame,
    load_index,
    resolve_image_root,
    stack_frames,
    warn_empty_boxes,
)
from dataset.names import VIDEO_DATASETS
from utils.io import UserInputError
from utils.letterbox import Letterbox, letterbox_params
from utils.transforms import Rng, eval_box, to_tensor
from utils.windows import TRAIN_FRAMES, window_indices
from utils.word_utils import Corpus


def video_index_path(split_root: str | os.PathLike, dataset: str, split: str) -> Path:
    return Path(split_root) / dataset / f"{dataset}_video_level_{split}.pth"


def _check_videos(videos: list, index_path: Path) -> None:
    for v, video in enumerate(videos):
        if not isinstance(video, (list, tuple)) or not video:
            raise UserInputError(f"index file {index_path}: video {v} must be a non-empty list of frames")
        if any(not isinstance(frame, (list, tuple)) or len(frame) != 3 for frame in video):
            raise UserInputError(
                f"index file {index_path}: every frame of video {v} must be (image_path, box, phrase)")


class VIDDataset(Dataset):
    """k-frame windows of every frame of every video (see the module docstring).

    Items: ``images`` (T, 3, S, S) float32, ``word_id`` (L,) long, ``boxes`` (T, 4) float32 letterboxed xyxy,
    ``letterbox`` (:class:`utils.letterbox.Letterbox`, fields (T,)), ``index`` int, ``phrase`` str (the
    lower-cased, possibly flip-swapped phrase that was tokenised), ``image_path`` str (centre frame, as in the
    index). With ``augment`` one flip decision covers the whole sample; HSV jitter and the affine warp are drawn
    per frame. ``rng`` defaults to the ``random`` module (re-seeded per DataLoader worker by PyTorch).
    Built with ``corpus=None`` it only gives metadata (:meth:`frame_meta`), e.g. to score cached predictions.
    Boxes are validated on load (:func:`dataset.common.check_boxes`); with ``skip_empty_boxes`` (training) the
    samples with a zero-width or zero-height box are left out, else they are kept; either way one warning.
    """

    def __init__(self, data_root: str | os.PathLike, split_root: str | os.PathLike, dataset: str, split: str,
                 corpus: Corpus | None, image_size: int = 256, num_frames: int = TRAIN_FRAMES,
                 augment: bool = False, max_query_len: int = 20, rng: Rng | None = None,
                 skip_empty_boxes: bool = False) -> None:
        if dataset not in VIDEO_DATASETS:
            raise UserInputError(f"unknown video dataset {dataset!r}; expected one of {', '.join(VIDEO_DATASETS)}")
        if num_frames < 1:
            raise UserInputError(f"num_frames must be >= 1, got {num_frames}")
        self.index_path = video_index_path(split_root, dataset, split)
        self.videos: list[list[tuple[str, Any, str]]] = load_index(self.index_path, split)
        _check_videos(self.videos, self.index_path)
        frames = [(v, t) for v, video in enumerate(self.videos) for t in range(len(video))]
        check_image_paths([self.videos[v][t][0] for v, t in frames], lambda i: self._source(*frames[i]))
        empty = check_boxes([self.videos[v][t][1] for v, t in frames], xywh=False,
                            describe=lambda i: self._source(*frames[i]))
        warn_empty_boxes(empty, self.index_path, lambda i: self._source(*frames[i]), skip_empty_boxes)
        check_phrases([self.videos[v][t][2] for v, t in frames], corpus, self.index_path,
                      lambda i: self._source(*frames[i]), max_query_len if corpus is not None else 0)
        self.samples: list[tuple[int, int]] = frames
        if skip_empty_boxes and empty.any():
            # a sample is skipped when a frame whose box is a target (every frame of its window) is empty
            empty_frames = {frame for frame, e in zip(frames, empty.tolist()) if e}
            self.samples = [(v, t) for v, t in frames if not any(
                (v, j) in empty_frames for j in window_indices(t, len(self.videos[v]), num_frames))]
        self.root = resolve_image_root(self.videos[0][0][0], [Path(), Path(data_root)], self.index_path)
        self.corpus = corpus
        self.image_size = image_size
        self.num_frames = num_frames
        self.augment = augment
        self.max_query_len = max_query_len
        self._rng = rng

    @property
    def rng(self) -> Rng:
        return random if self._rng is None else self._rng

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, t = self.samples[index]
        video = self.videos[v]
        flip = self.augment and self.rng.random() > 0.5
        phrase, word_id = encode_phrase(video[t][2], self.corpus, self.max_query_len, flip, self._source(v, t))
        frames, sizes = zip(*(self._frame(v, j, self.augment, flip)
                              for j in window_indices(t, len(video), self.num_frames)))
        item = stack_frames(frames, sizes)
        item.update(word_id=word_id, index=index, phrase=phrase, image_path=video[t][0])
        return item

    def _frame(self, v: int, t: int, augment: bool, flip: bool) -> tuple[tuple, tuple[int, int]]:
        path, box, _ = self.videos[v][t]
        return load_frame(self.root / path, int_box(box), self.index_path, self.image_size, augment, flip, self.rng,
                          self._source(v, t))

    def _source(self, v: int, t: int) -> str:
        return f"index file {self.index_path}, video {v} frame {t}"

    def frame_size(self, video_idx: int, frame_idx: int) -> tuple[int, int]:
        """Original ``(h, w)`` of a frame from its file header (no decoding)."""
        return image_size(self.root / self.videos[video_idx][frame_idx][0], self.index_path)

    def frame_meta(self, index: int) -> dict[str, Any]:
        """Evaluation metadata of sample ``index``'s own frame, its docs/behaviour.md §7 letterbox computed from the
        file header without decoding the image: ``boxes`` (4,) letterboxed ground truth, ``ratio``/``dw``/``dh``,
        ``orig_size`` (h, w), ``index``, ``image_path``, ``phrase``, ``video``, ``frame`` (to score cached
        predictions)."""
        v, t = self.samples[index]
        path, box, phrase = self.videos[v][t]
        h, w = self.frame_size(v, t)
        check_box_in_image(int_box(box), h, w, self._source(v, t))
        ratio, _, _, dw, dh = letterbox_params(h, w, self.image_size)
        return {
            "boxes": torch.tensor(eval_box(int_box(box), ratio, dw, dh), dtype=torch.float32),
            "letterbox": Letterbox.build(ratio, dw, dh, (h, w)),
            "index": index, "image_path": path, "phrase": phrase.lower(), "video": v, "frame": t,
        }

    def sequence_frames(self, videos: Sequence[int], share: bool = True) -> VIDSequenceFrames:
        """The frames of ``videos`` one at a time (docs/behaviour.md §7 preprocessing, never augmented), for
        streaming evaluation: each distinct frame once with every index entry grounded on it (``share``), or
        each index video on its own (one decoding per entry and frame, the per-sentence evaluation)."""
        return VIDSequenceFrames(self, videos, share)


def group_videos(videos: Sequence[Sequence[tuple]], which: Sequence[int], share: bool = True) -> list[list[int]]:
    """``which`` grouped into frame sequences: index videos with the same frame paths in the same order (the tubes
    and sentences of one video), in order of first appearance; with ``share=False`` each index video is its own
    sequence."""
    if not share:
        return [[v] for v in which]
    sequences: dict[tuple[str, ...], list[int]] = {}
    for v in which:
        sequences.setdefault(tuple(frame[0] for frame in videos[v]), []).append(v)
    return list(sequences.values())


class VIDSequenceFrames(Dataset):
    """Distinct frames of some videos of a :class:`VIDDataset`, each decoded once for all its index entries.

    Index videos over the same frames form one sequence (:func:`group_videos`). Item ``i`` is one frame of one
    sequence, in sequence then frame order: ``image`` (3, S, S), ``sequence``, ``frame``, ``length`` (ints), and
    ``queries``, one dict per index entry of the sequence, with that entry's metadata as in
    :meth:`VIDDataset.frame_meta` plus ``word_id`` (L,). Batch with :func:`collate_sequence_frames`.
    """

    def __init__(self, dataset: VIDDataset, videos: Sequence[int], share: bool = True) -> None:
        self.dataset = dataset
        self.sequences = group_videos(dataset.videos, videos, share)
        starts = [0]
        for video in dataset.videos:
            starts.append(starts[-1] + len(video))
        self.starts = starts
        self.samples = [(c, t) for c, group in enumerate(self.sequences) for t in range(len(dataset.videos[group[0]]))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ds = self.dataset
        c, t = self.samples[index]
        group = self.sequences[c]
        (img, _, ratio, dw, dh), (h, w) = ds._frame(group[0], t, augment=False, flip=False)
        letterbox = Letterbox.build(ratio, dw, dh, (h, w))
        queries = []
        for v in group:
            path, box, phrase = ds.videos[v][t]
            phrase, word_id = encode_phrase(phrase, ds.corpus, ds.max_query_len, False, ds._source(v, t))
            box = torch.tensor(eval_box(int_box(box), ratio, dw, dh), dtype=torch.float32)
            queries.append({"boxes": box, "letterbox": letterbox, "index": self.starts[v] + t, "image_path": path,
                            "phrase": phrase, "video": v, "frame": t, "word_id": word_id})
        return {"image": to_tensor(img[None])[0], "sequence": c, "frame": t,
                "length": len(ds.videos[group[0]]), "queries": queries}


def collate_sequence_frames(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Frames of :class:`VIDSequenceFrames` -> ``images`` (F, 3, S, S) and per-frame lists of the other keys."""
    return {"images": torch.stack([item["image"] for item in items]),
            **{key: [item[key] for item in items] for key in ("sequence", "frame", "length", "queries")}}
