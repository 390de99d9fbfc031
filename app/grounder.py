"""Ground sentences in your own videos and images: the :class:`Grounder` API behind ``ground.py``.

    grounder = Grounder.from_checkpoint("saved_models/cgslatt_model_best.pth.tar")
    for prediction in grounder.ground(read_frames(["clip.mp4"]), ["the red car on the left"]):
        print(prediction.frame, prediction.box)

Frames are decoded once, in order, and never held beyond the windows that still need them: the streaming core
of the test script's evaluation (:func:`app.stream.ground_stream`) computes each frame's backbone once for all
sentences and co-grounds 5-frame windows clipped at both ends of the video exactly as the test script does.
``post_process=True`` re-scores each frame's top-5 candidates over its window in memory with the same code as
``post_processing.py`` (:class:`app.cache.VideoRescorer`).

Checkpoints written by our training scripts carry what grounding needs under ``inference``
(:func:`app.builders.inference_config`); the authors' released ones take the reference defaults (full cfg, 256
px, E = 512, the default anchors in 416-px units) and a corpus.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from app.builders import stored_cfg
from app.cache import CACHE_TOPK, CacheEntry, VideoRescorer, topk_candidates
from app.records import Candidate, Pick, Prediction
from app.stream import ground_stream
from dataset.common import check_image_file
from model import DEFAULT_CFG, build_grounding_model, model_kind
from utils.checkpoint import INFERENCE_KEY, load_model_state, read_checkpoint
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.io import UserInputError
from utils.letterbox import Letterbox, letterbox
from utils.transforms import to_tensor
from utils.video import probe_video, read_video
from utils.windows import EVAL_FRAMES
from utils.word_utils import END_TOKEN, PAD_TOKEN, UNK_TOKEN, Corpus, Dictionary, load_corpus, read_tokens

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# the reference's defaults, for checkpoints without an ``inference`` entry (the authors' released ones)
REFERENCE_DEFAULTS = {"size": 256, "emb_size": 512, "light": False, "anchor_imsize": 416, "max_query_len": 20}


@dataclass
class SourceFrame:
    """One input frame: ``index`` in its video or folder (the image number for separate images), ``clip`` (images
    are clips of one frame each), ``name`` (the file), ``image`` H x W x 3 uint8 BGR (OpenCV's pixels), and
    ``time`` in seconds from a video's first frame (its timestamp; None for images)."""

    index: int
    clip: int
    name: str
    image: np.ndarray
    time: float | None = None


@dataclass
class FrameSource:
    """What the inputs are (``kind``: 'video', 'frames' or 'images'), the frame rate of a video, and the frames,
    decoded one at a time when iterated."""

    kind: str
    paths: list[Path]
    fps: float | None = None
    frame_count: int | None = None  # of a video, as its header says (a progress-bar total, not trusted)

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.kind == "video":
            yield from _video_frames(self.paths[0])
            return
        for i, path in enumerate(self.paths):
            check_image_file(path)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UserInputError(f"image {path} cannot be decoded (corrupt or not an image)")
            yield SourceFrame(i, i if self.kind == "images" else 0, str(path), image)


def natural_key(name: str) -> list:
    """Sort key that orders 'frame2' before 'frame10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_frames(inputs: Sequence[str | os.PathLike]) -> FrameSource:
    """A video file (anything FFmpeg decodes, read through PyAV with its timestamps), a folder of frames (natural
    sort order), or images. Opens the video (or lists the folder) now, so bad input fails before any work."""
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise UserInputError(f"input {path} not found")
    if len(paths) == 1 and paths[0].is_dir():
        frames = sorted((p for p in paths[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: natural_key(p.name))
        if not frames:
            raise UserInputError(f"folder {paths[0]} holds no frames (expected images: {', '.join(IMAGE_SUFFIXES)})")
        return FrameSource("frames", frames)
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return FrameSource("images", paths)
    if len(paths) > 1:
        raise UserInputError(f"inputs {' '.join(map(str, paths))}: give one video, one folder of frames, or images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
    fps, count = probe_video(paths[0])
    return FrameSource("video", paths, fps, count)


def _video_frames(path: Path) -> Iterator[SourceFrame]:
    for index, (image, time) in enumerate(read_video(path)):
        yield SourceFrame(index, 0, str(path), image, time)


def corpus_from_words(words: Sequence[str]) -> Corpus:
    """The corpus whose vocabulary is ``words`` in index order (as saved by :func:`app.builders.inference_config`)."""
    corpus = Corpus()
    corpus.dictionary = Dictionary()
    for word in words:
        corpus.dictionary.add_word(word)
    return corpus


class Grounder:
    """A grounding model ready for inference: ``kind`` 'video' (CG-SL-Att, 5-frame windows) or 'image' (SL-Att,
    each frame alone). Build it with :meth:`from_checkpoint`; :meth:`ground` streams frames and yields predictions."""

    def __init__(self, model: nn.Module, kind: str, corpus: Corpus, geometry: Geometry, max_query_len: int = 20,
                 device: torch.device | None = None, amp_dtype: torch.dtype | None = None,
                 batch_size: int = 8) -> None:
        if batch_size < 1:
            raise UserInputError(f"--batch_size must be at least 1, got {batch_size}")
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.kind = kind
        self.corpus = corpus
        self.geometry = geometry
        self.max_query_len = max_query_len
        self.amp_dtype = amp_dtype
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, kind: str | None = None, corpus: str | os.PathLike | None = None,
                        cfg: str | os.PathLike | None = None, device: torch.device | None = None,
                        amp_dtype: torch.dtype | None = None, batch_size: int = 8, **overrides: Any) -> Grounder:
        """Load ``path``; its kind comes from its keys and must equal ``kind`` if given.

        Settings come from the checkpoint's ``inference`` entry, else from the reference defaults; ``corpus``,
        ``cfg`` and ``overrides`` (``size``, ``emb_size``, ``light``, ``anchor_imsize``, ``anchors``,
        ``max_query_len``; None values are ignored) replace them.
        """
        checkpoint = read_checkpoint(path)
        found = model_kind(checkpoint["state_dict"])
        if kind is not None and kind != found:
            raise UserInputError(f"checkpoint {path} holds the {found} model "
                                 f"({'CG-SL-Att' if found == 'video' else 'SL-Att'}), not the {kind} model asked for")
        saved = checkpoint.get(INFERENCE_KEY) or {}
        settings = {**REFERENCE_DEFAULTS, "anchors": [list(a) for a in DEFAULT_ANCHORS], **saved,
                    **{k: v for k, v in overrides.items() if v is not None}}
        if corpus is not None:
            vocabulary = load_corpus(corpus)
        elif "words" in saved:
            vocabulary = corpus_from_words(saved["words"])
        else:
            raise UserInputError(f"checkpoint {path} carries no vocabulary (a released checkpoint?): pass --corpus "
                                 "with the corpus.pth it was trained with")
        with tempfile.TemporaryDirectory() as tmp:
            if cfg is None and "cfg" in saved:
                cfg = stored_cfg(saved, Path(tmp))
            model = build_grounding_model(found, len(vocabulary), cfg_path=cfg or DEFAULT_CFG,
                                          image_size=settings["size"], emb_size=settings["emb_size"],
                                          light=settings["light"])
        load_model_state(model, checkpoint["state_dict"], str(path))
        geometry = Geometry(settings["size"], tuple(tuple(a) for a in settings["anchors"]), settings["anchor_imsize"])
        return cls(model, found, vocabulary, geometry, settings["max_query_len"], device, amp_dtype, batch_size)

    def unknown_words(self, sentence: str) -> list[str]:
        """The words of ``sentence`` that are read (not past the maximum length) and that the vocabulary lacks (they
        are read as ``<unk>``), each once."""
        words, _ = read_tokens(sentence.lower(), self.max_query_len)
        return list(dict.fromkeys(w for w in words if w not in self.corpus.dictionary and w != "."))

    def dropped_tokens(self, sentence: str) -> int:
        """How many tokens of ``sentence`` are past the maximum length (``--time``) and not read."""
        return read_tokens(sentence.lower(), self.max_query_len)[1]

    def encode(self, sentence: str) -> torch.Tensor:
        """Word ids (L,) of ``sentence``; a sentence with no known word (among those read) is an error naming it."""
        words = [w for w in read_tokens(sentence.lower(), self.max_query_len)[0] if w != "."]
        special = {PAD_TOKEN, UNK_TOKEN, END_TOKEN}
        if not any(w in self.corpus.dictionary and w not in special for w in words):
            raise UserInputError(f"sentence {sentence!r}: none of its words is in the model's vocabulary "
                                 f"({len(self.corpus)} words), so there is nothing to ground")
        return self.corpus.tokenize(sentence.lower(), self.max_query_len)

    def ground(self, frames: Iterable[SourceFrame], sentences: Sequence[str], stride: int = 1, top_k: int = 5,
               post_process: bool = False) -> Iterator[Prediction]:
        """One :class:`app.records.Prediction` per grounded frame and sentence, in frame then sentence order.

        Every ``stride``-th frame of each clip is grounded (windows are made of the grounded frames); each
        prediction keeps its ``top_k`` most confident candidates. With ``post_process`` (video model) the box is
        the candidate the §8 re-scoring picks (``candidate``).
        """
        if not sentences:
            raise UserInputError("no sentence to ground: pass --phrase (or --phrases FILE)")
        if stride < 1:
            raise UserInputError(f"--stride must be at least 1, got {stride}")
        if not 1 <= top_k <= CACHE_TOPK:
            raise UserInputError(f"--top_k must be between 1 and {CACHE_TOPK}, got {top_k}")
        if post_process and self.kind != "video":
            raise UserInputError("--post_process re-scores co-grounded candidates: it needs a video (CG-SL-Att) "
                                 "checkpoint, this one is an image (SL-Att) model")
        word_ids = [self.encode(s) for s in sentences]
        num_frames = EVAL_FRAMES if self.kind == "video" else 1
        batches = self._batches(_strided(frames, stride), sentences, word_ids)
        grounded = ground_stream(self.model, batches, self.device, num_frames, self.batch_size, self.amp_dtype)
        decoded = (row for outputs, meta in grounded for row in self._decode(outputs, meta))
        predictions = _rescored(decoded, len(sentences)) if post_process else (p for p, _ in decoded)
        for prediction in predictions:
            prediction.candidates = prediction.candidates[:top_k]
            yield prediction

    def _batches(self, frames: Iterable[tuple[SourceFrame, int, bool]], sentences: Sequence[str],
                 word_ids: list[torch.Tensor]) -> Iterator[dict[str, Any]]:
        """Letterboxed frames, ``batch_size`` at a time, as :func:`app.stream.ground_stream` takes them."""
        batch: list[tuple[np.ndarray, SourceFrame, int, bool, Letterbox]] = []
        for frame, t, last in frames:
            h, w = frame.image.shape[:2]
            img, ratio, dw, dh = letterbox(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB), self.geometry.image_size)
            batch.append((img, frame, t, last, Letterbox.build(ratio, dw, dh, (h, w))))
            if len(batch) == self.batch_size:
                yield self._collate(batch, sentences, word_ids)
                batch = []
        if batch:
            yield self._collate(batch, sentences, word_ids)

    @staticmethod
    def _collate(batch: list, sentences: Sequence[str], word_ids: list[torch.Tensor]) -> dict[str, Any]:
        return {
            "images": to_tensor(np.stack([img for img, *_ in batch])),  # (F, 3, S, S)
            "sequence": [frame.clip for _, frame, *_ in batch],  # each clip is one sequence of frames
            "frame": [t for _, _, t, _, _ in batch],
            "length": [t + 1 if last else None for _, _, t, last, _ in batch],
            "queries": [[{"letterbox": frame_letterbox, "word_id": word_id, "sentence": s, "phrase": sentences[s],
                          "frame": frame.index, "clip": frame.clip, "name": frame.name, "time": frame.time}
                         for s, word_id in enumerate(word_ids)] for _, frame, _, _, frame_letterbox in batch],
        }

    def _decode(self, outputs: dict, meta: dict[str, Any]) -> Iterator[tuple[Prediction, CacheEntry | None]]:
        """The predictions of a batch of grounded rows with their top-5 candidates, each with those candidates
        as a one-frame :class:`CacheEntry` for the re-scoring (None for the image model)."""
        boxes, scores, feats = (None if t is None else t.float().cpu()
                                for t in topk_candidates(outputs, meta, self.geometry, CACHE_TOPK))
        finite = torch.isfinite(boxes).all(dim=(1, 2)) & torch.isfinite(scores).all(dim=1)  # (R,)
        if not bool(finite.all()):
            r = int((~finite).nonzero()[0])
            raise FloatingPointError(f"frame {meta['frame'][r]} of {meta['name'][r]}, sentence "
                                     f"{meta['phrase'][r]!r}: the model gave a non-finite box (numerical overflow"
                                     f"{' under --amp' if self.amp_dtype is not None else ''}?); nothing written")
        for r in range(boxes.shape[0]):
            candidates = [Candidate(_rounded(boxes[r, k]), float(scores[r, k])) for k in range(CACHE_TOPK)]
            prediction = Prediction(meta["frame"][r], meta["clip"][r], meta["name"][r], meta["time"][r],
                                    meta["sentence"][r], meta["phrase"][r], candidates[0].box, candidates[0].score,
                                    candidates)
            yield prediction, None if feats is None else CacheEntry(boxes[r:r + 1], scores[r:r + 1], feats[r:r + 1])


def _rounded(box: torch.Tensor) -> list[float]:
    return [round(v, 4) for v in box.tolist()]  # as the test script's --save_pred records


def _strided(frames: Iterable[SourceFrame], stride: int) -> Iterator[tuple[SourceFrame, int, bool]]:
    """Every ``stride``-th frame of each clip as ``(frame, index among the kept frames, last of its clip)``,
    looking one kept frame ahead to know which is the last."""
    previous: tuple[SourceFrame, int] | None = None
    clip, position, kept = None, 0, 0
    for frame in frames:
        if frame.clip != clip:
            clip, position, kept = frame.clip, 0, 0
        if position % stride == 0:
            if previous is not None:
                yield previous[0], previous[1], previous[0].clip != frame.clip
            previous = (frame, kept)
            kept += 1
        position += 1
    if previous is not None:
        yield previous[0], previous[1], True


def _rescored(decoded: Iterable[tuple[Prediction, CacheEntry]], sentences: int) -> Iterator[Prediction]:
    """The predictions with the box and score of the candidate the §8 re-scoring picks (``candidate``), in order.

    Predictions come clip by clip, frame by frame, all sentences of a frame together; each sentence's
    :class:`VideoRescorer` lags a couple of frames behind, so predictions wait in ``held`` until their pick is
    known.
    """
    held: list[Prediction] = []
    rescorers: list[VideoRescorer] = []
    first: list[int] = []  # per sentence: position in ``held`` of its kept frame 0 in the current clip
    clip = None

    def pick(s: int, picks: list[Pick]) -> None:
        for p in picks:
            held[first[s] + p.frame * sentences].pick(p.candidate)

    def release() -> Iterator[Prediction]:
        done = 0
        while done < len(held) and held[done].candidate is not None:
            done += 1
        yield from held[:done]
        del held[:done]
        first[:] = [f - done for f in first]

    for prediction, entry in decoded:
        if prediction.clip != clip:
            for s, rescorer in enumerate(rescorers):
                pick(s, rescorer.finish())
            yield from release()
            clip, rescorers = prediction.clip, [VideoRescorer(EVAL_FRAMES) for _ in range(sentences)]
            first = [len(held) + s for s in range(sentences)]
        s = prediction.sentence
        held.append(prediction)
        pick(s, rescorers[s].push(entry))
        yield from release()
    for s, rescorer in enumerate(rescorers):
        pick(s, rescorer.finish())
    yield from release()
