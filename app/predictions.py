"""What evaluation and grounding leave behind: the JSON Lines prediction file (``--save_pred``), annotated
images (``--save_plot``), and ``ground.py``'s annotated frames and GIF (its video is written by :mod:`utils.video`).
Records are the evaluation records of :mod:`app.records` (boxes in original image pixels)."""
from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from utils.io import UserInputError, atomic_file, atomic_write_text, publish_folder, staging_folder

PRED_COLOUR = (0, 0, 255)  # BGR red
GT_COLOUR = (0, 200, 0)  # BGR green
PRED_FIELDS = ("image", "phrase", "pred", "gt", "iou")
JSONL_SUFFIXES = (".jsonl", ".ndjson")  # what a JSON Lines output may be named


def check_writable(path: str | os.PathLike | None, overwrite: bool, flag: str) -> None:
    """Refuse to replace an existing file or a non-empty folder unless ``--overwrite`` was given."""
    if path is None or overwrite:
        return
    path = Path(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise UserInputError(f"{flag} {path} already exists and is not empty; pass --overwrite to replace it")


def write_predictions(records: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """JSON Lines, one record per evaluated sample in dataset order: image, phrase, pred, gt, iou."""
    records = sorted(records, key=lambda r: r["index"])
    for r in records:
        if not all(math.isfinite(v) for v in [*r["pred"], r["iou"]]):
            raise FloatingPointError(f"sample {r['index']} ({r['image']}): the model gave a non-finite box "
                                     f"{r['pred']}; predictions not written")
    lines = [json.dumps({k: r[k] for k in PRED_FIELDS}, allow_nan=False) for r in records]
    return atomic_write_text("\n".join(lines) + "\n" if lines else "", path)


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def draw_record(img: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """``img`` (BGR) with the ground truth (green), the prediction (red), the phrase and the IoU drawn."""
    img = img.copy()
    for box, colour in ((record["gt"], GT_COLOUR), (record["pred"], PRED_COLOUR)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
    scale = max(img.shape[1] / 640, 0.4)
    text = f"{record['phrase']}  (IoU {record['iou']:.2f})"
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (w + 6, h + base + 6), (0, 0, 0), -1)
    cv2.putText(img, text, (3, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def save_plots(records: Iterable[dict[str, Any]], out_dir: str | os.PathLike,
               resolve: Callable[[str], Path], limit: int) -> int:
    """Write up to ``limit`` annotated images ``<out_dir>/<index>_<image stem>.jpg``; returns how many.

    The folder is written aside and swapped in whole: an existing ``out_dir`` is replaced only once the new
    one is complete.
    """
    staged = staging_folder(out_dir)
    try:
        written = 0
        for record in sorted(records, key=lambda r: r["index"])[:limit]:
            source = resolve(record["image"])
            img = cv2.imread(str(source), cv2.IMREAD_COLOR)
            if img is None:
                raise UserInputError(f"--save_plot: cannot read {source}")
            target = staged / f"{record['index']:06d}_{Path(record['image']).stem}.jpg"
            if not cv2.imwrite(str(target), draw_record(img, record)):
                raise UserInputError(f"--save_plot: cannot write {target}")
            written += 1
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    publish_folder(staged, out_dir)
    return written


# BGR, well apart on screen: one per sentence, cycling after ten
SENTENCE_COLOURS = ((0, 0, 255), (255, 128, 0), (0, 200, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0),
                    (0, 128, 255), (128, 0, 255), (128, 255, 128), (255, 255, 255))


def sentence_colour(sentence: int) -> tuple[int, int, int]:
    return SENTENCE_COLOURS[sentence % len(SENTENCE_COLOURS)]


def draw_sentences(img: np.ndarray, phrases: list[str], boxes: dict[int, list[float]]) -> np.ndarray:
    """``img`` (BGR) with each sentence's box in its colour and a legend of the sentences at the top left."""
    img = img.copy()
    scale = max(img.shape[1] / 900, 0.35)
    thickness = max(1, round(img.shape[1] / 400))
    for s, box in boxes.items():
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), sentence_colour(s), thickness)
    y = 0
    for s, phrase in enumerate(phrases):
        (w, h), base = cv2.getTextSize(phrase, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(img, (0, y), (w + 6, y + h + base + 4), (0, 0, 0), -1)
        cv2.putText(img, phrase, (3, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, sentence_colour(s), 1, cv2.LINE_AA)
        y += h + base + 4
    return img


def fit_frame(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` (BGR) on a black ``size`` (W, H) canvas, centred, scaled down to fit where it is larger (never up).

    The annotated video and GIF take the first frame's size; a later frame of another size is fitted into it,
    so a folder of mixed sizes gives every output all its frames (docs/behaviour.md §10).
    """
    h, w = img.shape[:2]
    if (w, h) == size:
        return img
    ratio = min(1.0, size[0] / w, size[1] / h)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    top, left = (size[1] - new_h) // 2, (size[0] - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = img
    return canvas


def save_gif(frames: list[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """An animated GIF of BGR ``frames`` at ``fps``, written atomically."""
    images = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
    with atomic_file(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return Path(path)
