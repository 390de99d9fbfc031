"""What grounding and evaluation produce: a :class:`Prediction` per grounded frame and sentence (the grounder's
output), the :class:`Pick` of the docs/behaviour.md §8 re-scoring for one frame, and the evaluation records of
the test scripts, scored against the ground truth and summarised.

Evaluation records are plain dicts, as the ``--save_pred`` JSON Lines hold them: ``index``, ``image``, ``phrase``,
``pred``, ``gt`` (boxes in original image pixels, docs/behaviour.md §7), ``iou``, ``hit``, and ``centre_hit``,
``video``, ``frame`` where known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from utils.box_ops import box_iou
from utils.geometry import Geometry, centre_cell, decode_topk
from utils.letterbox import boxes_to_original, gt_to_original


@dataclass
class Candidate:
    """One of a frame's top-k boxes: [x1, y1, x2, y2] in original pixels and its confidence."""

    box: list[float]
    score: float


@dataclass
class Prediction:
    """The box grounded for one sentence on one frame, with the top-k candidates it was chosen from.

    ``frame`` is the frame's index in its input (its number among separate images), ``clip`` the input it belongs
    to, ``name`` its file, ``time`` its timestamp in seconds (None for images); ``sentence`` numbers the sentence,
    ``phrase`` is its text. ``box`` and ``score`` are the most confident candidate's, or with the §8 re-scoring
    those of the candidate it picked (``candidate``, its rank; None without re-scoring).
    """

    frame: int
    clip: int
    name: str
    time: float | None
    sentence: int
    phrase: str
    box: list[float]
    score: float
    candidates: list[Candidate]
    candidate: int | None = None

    def pick(self, rank: int) -> None:
        """Take the box and score of candidate ``rank`` (the re-scoring's choice)."""
        self.candidate = rank
        self.box, self.score = self.candidates[rank].box, self.candidates[rank].score


class Pick(NamedTuple):
    """The §8 re-scoring's choice for one frame: its index (in its video, or among all test frames), the rank of
    the chosen candidate and its box (4,) in original pixels."""

    frame: int
    candidate: int
    box: Tensor


def score_predictions(
    pred_anchor: list[Tensor], meta: dict[str, Any], geometry: Geometry
) -> list[dict[str, Any]]:
    """Records of a batch of predictions (docs/behaviour.md §7): the arg-max box and the ground truth in original
    pixels, their IoU and the hits.

    ``meta`` holds the grounded frame's ``boxes`` (B, 4) letterboxed ground truth, its ``letterbox`` (fields
    (B,)), and ``index``, ``image_path``, ``phrase`` (length B).
    """
    decoded = decode_topk(pred_anchor, geometry.image_size, geometry.anchors, geometry.anchor_imsize, k=1)
    device = decoded.boxes.device
    pred = boxes_to_original(decoded.boxes[:, 0], *meta["letterbox"].params(device))  # (B, 4)
    target = centre_cell(meta["boxes"].to(device), geometry.image_size, geometry.anchors, geometry.anchor_imsize)
    centre_hit = (decoded.gi[:, 0] == target.gi) & (decoded.gj[:, 0] == target.gj)
    return score_boxes(pred, meta, geometry.image_size, centre_hit)


def score_boxes(pred: Tensor, meta: dict[str, Any], image_size: int, centre_hit: Tensor | None = None
                ) -> list[dict[str, Any]]:
    """Records of (B, 4) predicted boxes already in original pixels against the ground truth in ``meta``."""
    gt = gt_to_original(meta["boxes"].to(pred.device), image_size, *meta["letterbox"].params(pred.device))  # (B, 4)
    iou = box_iou(pred, gt).tolist()
    pred, gt = pred.tolist(), gt.tolist()  # one device sync per batch, not per value
    hits_centre = None if centre_hit is None else centre_hit.tolist()
    extra = {k: meta[k] for k in ("video", "frame") if k in meta}
    records = []
    for b in range(len(pred)):
        record = {
            "index": int(meta["index"][b]),
            "image": meta["image_path"][b],
            "phrase": meta["phrase"][b],
            "pred": [round(v, 4) for v in pred[b]],
            "gt": [round(v, 4) for v in gt[b]],
            "iou": iou[b],
            "hit": iou[b] > 0.5,
        }
        if hits_centre is not None:
            # quirk: the reference compares gi and gj only, not the scale (docs/behaviour.md §7 "centre accuracy")
            record["centre_hit"] = hits_centre[b]
        record.update({k: int(v[b]) for k, v in extra.items()})
        records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy (IoU > 0.5), mean IoU, and centre accuracy where the records carry it, of evaluation records."""
    n = len(records)
    summary: dict[str, float] = {"count": n}
    summary["accuracy"] = sum(r["hit"] for r in records) / n if n else float("nan")
    summary["miou"] = sum(r["iou"] for r in records) / n if n else float("nan")
    if n and all("centre_hit" in r for r in records):
        summary["centre_accuracy"] = sum(r["centre_hit"] for r in records) / n
    return summary
