"""Streaming inference: frames arrive in video order, each frame's backbone runs once, and the k-frame windows
that contain it are grounded from those features (docs/behaviour.md §1 windows, §7).

:class:`SlidingWindow` is the bookkeeping both streams share: which centres' windows are complete and which
frames a window still to come needs. :class:`WindowStream` keeps the frames themselves; the §8 re-scoring
(:class:`app.cache.VideoRescorer`) keeps each frame's cached candidates.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from utils.amp import autocast, outputs_to_float32
from utils.letterbox import Letterbox
from utils.windows import window_indices, window_positions


class SlidingWindow:
    """Which k-frame windows of one video are complete as its frames arrive in order (docs/behaviour.md §1)."""

    def __init__(self, num_frames: int) -> None:
        span = window_positions(0, num_frames)
        self.back, self.ahead = -span.start, span.stop - 1
        self.next_centre = 0

    def complete(self, arrived: int, ended: bool = False) -> range:
        """The centres whose window is complete now that frames ``0 .. arrived - 1`` are in (all of them once the
        video has ``ended``); each centre is returned once."""
        stop = arrived if ended else arrived - self.ahead
        centres = range(self.next_centre, max(stop, self.next_centre))
        self.next_centre = centres.stop
        return centres

    @property
    def first_needed(self) -> int:
        """The first frame that a window still to come contains: earlier frames can be dropped."""
        return self.next_centre - self.back


@dataclass
class Frame:
    """One decoded frame: its per-scale ``model.frame_features`` ((h, w, 2E) for the video model) and the sentences
    grounded on it (``queries``: one metadata dict each, with ``word_id`` (L,))."""

    feats: list[Tensor]
    queries: list[dict[str, Any]]


Window = tuple[Frame, list[Frame]]  # (centre frame, the window's frames)


class WindowStream:
    """Turns frames arriving in video order into complete k-frame windows (docs/behaviour.md §1 clipping).

    ``push`` frame ``t`` of video ``v`` with the video's length ``n``, or ``n=None`` while the length is unknown
    (a decoded video file: pass ``n = t + 1`` with its last frame). It returns the windows whose last frame has
    now arrived, as (centre frame, window frames). Only the frames a future window can still use are kept, so
    memory stays bounded by about ``k`` frames per stream.
    """

    def __init__(self, num_frames: int) -> None:
        self.num_frames = num_frames
        self.window = SlidingWindow(num_frames)
        self.video: Any = None
        self.length: int | None = None
        self.frames: dict[int, Any] = {}
        self.expected = 0

    def push(self, video: Any, t: int, n: int | None, frame: Any) -> list[tuple[Any, list[Any]]]:
        if video != self.video:
            self.close()
            self.video, self.frames, self.expected = video, {}, 0
            self.window = SlidingWindow(self.num_frames)
        if t != self.expected:
            raise ValueError(f"frames of video {video} must arrive in order: got frame {t}, expected {self.expected}")
        self.length = n
        self.expected += 1
        self.frames[t] = frame
        ready = [(self.frames[c], [self.frames[j] for j in window_indices(c, t + 1, self.num_frames)])  # all j <= t
                 for c in self.window.complete(t + 1, ended=n is not None and t == n - 1)]
        for old in [j for j in self.frames if j < self.window.first_needed]:
            del self.frames[old]
        return ready

    def close(self) -> None:
        """Check that the current video got all its frames (else its last windows would be silently lost)."""
        if self.video is not None and self.expected != self.length:
            total = "" if self.length is None else f" of its {self.length}"
            raise ValueError(f"video {self.video} ended after {self.expected}{total} frames, before its last frame")


def collate_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sample metadata dicts -> one dict: tensors (and each field of a :class:`Letterbox`) stacked along a new
    first dim, other values listed."""
    return {key: default_collate([m[key] for m in metas]) if isinstance(first, (Tensor, Letterbox))
            else [m[key] for m in metas] for key, first in metas[0].items()}


def ground_windows(model: nn.Module, windows: list[Window], device: torch.device,
                   amp_dtype: torch.dtype | None) -> tuple[dict, dict[str, Any]]:
    """Every sentence of the centre frames of ``windows``: float32 outputs and collated metadata, one row per
    (window, sentence) in order. A one-frame window (image model) is grounded on the frame's own features."""
    metas = [q for centre, _ in windows for q in centre.queries]
    meta = collate_meta(metas)
    word_id = meta["word_id"].to(device)
    sentences = torch.tensor([len(centre.queries) for centre, _ in windows])
    with autocast(device, amp_dtype):
        if len(windows[0][1]) == 1:  # per scale (R, E, h, w)
            visual = [torch.stack([c.feats[s] for c, _ in windows]).repeat_interleave(sentences.to(device), dim=0)
                      for s in range(len(windows[0][0].feats))]
            outputs = model.ground(visual, word_id)
        else:
            frame_feats = [torch.stack([torch.stack([f.feats[s] for f in frames]) for _, frames in windows])
                           for s in range(len(windows[0][0].feats))]  # per scale (W, T, h, w, C)
            outputs = model.ground_windows(frame_feats, word_id, sentences)
    return outputs_to_float32(outputs), meta


@torch.inference_mode()
def ground_stream(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    num_frames: int = 5,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
) -> Iterator[tuple[dict, dict[str, Any]]]:
    """The streaming core of video grounding: frames in order -> each frame's features once -> k-frame windows
    -> every sentence of each window grounded from the shared features.

    ``batches`` yield ``images`` (F, 3, S, S) and per frame ``sequence`` (the id of the frame sequence it belongs
    to: windows never cross sequences), ``frame`` (index in the sequence), ``length`` (the sequence's length, or
    None until its last frame, see :class:`WindowStream`) and ``queries`` (the sentences grounded on that frame,
    as metadata dicts with ``word_id``). The frames of a sequence arrive
    consecutively; only the frames a window can still use are kept. Yields ``(outputs, meta)`` for up to
    ``batch_size`` windows at a time (all their sentences), in the order the windows complete.
    ``num_frames=1`` grounds each frame alone (the image model).
    """
    model.eval()
    stream = WindowStream(num_frames)
    pending: list[Window] = []
    for batch in batches:
        with autocast(device, amp_dtype):
            feats = model.frame_features(batch["images"].to(device))  # per scale (F, h, w, C) (video model)
        for f, (sequence, t, n, queries) in enumerate(zip(batch["sequence"], batch["frame"], batch["length"],
                                                          batch["queries"])):
            pending += stream.push(sequence, t, n, Frame([x[f] for x in feats], queries))
        while len(pending) >= batch_size:
            yield ground_windows(model, pending[:batch_size], device, amp_dtype)
            pending = pending[batch_size:]
    stream.close()
    if pending:
        yield ground_windows(model, pending, device, amp_dtype)
