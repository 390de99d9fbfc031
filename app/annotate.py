"""Ground a clip and draw the boxes on it: the loop behind ``ground.py``'s outputs and the web page's.

Frames are decoded once; each one waits in memory only until the boxes of its sentences are known, then it is
drawn (every frame, also those that ``stride`` skips: they keep the latest boxes) and handed on in order.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.grounder import FrameSource, Grounder, SourceFrame
from app.predictions import draw_sentences, fit_frame
from app.records import Prediction
from dataset.common import load_index
from dataset.vid_loader import video_index_path


def ground_and_draw(grounder: Grounder, frames: Iterable[SourceFrame], sentences: list[str],
                    on_frame: Callable[[np.ndarray], None] | None = None, stride: int = 1, top_k: int = 5,
                    post_process: bool = False) -> Iterator[list[Prediction]]:
    """The predictions of each grounded frame (one per sentence, in sentence order), frame by frame.

    ``on_frame`` (if given) receives every decoded frame, BGR, with each sentence's latest box and the legend drawn
    (:func:`app.predictions.draw_sentences`), in order, as soon as its boxes are known, at the first frame's size: a
    frame of another size is fitted into it (:func:`app.predictions.fit_frame`), so that a video or GIF made of
    them holds every frame (docs/behaviour.md §10).
    """
    pending: deque[SourceFrame] = deque()  # decoded frames waiting for their boxes
    canvas: list[tuple[int, int]] = []  # (W, H) of the drawn frames: the first frame's

    def kept(source: Iterable[SourceFrame]) -> Iterator[SourceFrame]:
        for frame in source:
            if on_frame is not None:
                pending.append(frame)
            yield frame

    def flush(boxes: dict[int, list[float]], before: int | None) -> None:
        while pending and (before is None or pending[0].index < before):
            img = draw_sentences(pending.popleft().image, sentences, boxes)
            canvas[:] = canvas or [(img.shape[1], img.shape[0])]
            on_frame(fit_frame(img, canvas[0]))

    boxes: dict[int, list[float]] = {}
    predictions: list[Prediction] = []
    for prediction in grounder.ground(kept(frames), sentences, stride=stride, top_k=top_k,
                                      post_process=post_process):
        boxes[prediction.sentence] = prediction.box
        predictions.append(prediction)
        if prediction.sentence == len(sentences) - 1:
            if on_frame is not None:
                flush(boxes, prediction.frame + stride)
            yield predictions
            predictions = []
    if on_frame is not None:
        flush(boxes, None)


def json_record(prediction: Prediction, source: FrameSource, fps: float) -> dict[str, Any]:
    """The JSON Lines fields: frame, time (videos: seconds from the first frame), image (folders and images),
    sentence, box, score, candidates."""
    out = {"frame": prediction.frame}
    if source.kind == "video":  # the frame's timestamp (variable frame rates), else its number over the rate
        out["time"] = round(prediction.frame / fps if prediction.time is None else prediction.time, 4)
    else:
        out["image"] = prediction.name
    out.update(sentence=prediction.phrase, box=prediction.box, score=prediction.score,
               candidates=[asdict(c) for c in prediction.candidates])
    if prediction.candidate is not None:
        out["candidate"] = prediction.candidate
    return out


def test_clips(data: Path) -> list[tuple[list[Path], list[str]]]:
    """The test clips of a VID-format set (the demo's synthetic one) in index order: each clip's frame paths and
    the sentences of its entries (an index entry is one sentence on one clip)."""
    clips: dict[tuple[str, ...], list[str]] = {}
    for video in load_index(video_index_path(data, "VID", "test"), "test"):
        clips.setdefault(tuple(path for path, _, _ in video), []).append(video[0][2])
    return [([data / path for path in frames], sentences) for frames, sentences in clips.items()]
