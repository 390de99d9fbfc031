"""Training and evaluation loops shared by the entry scripts (after DETR's ``engine.py``).

Batches are the default-collated dicts of the loaders (see ``dataset/``): an image batch has ``image``
(B, 3, S, S) and ``box`` (B, 4); a video batch has ``images`` (B, T, 3, S, S) and ``boxes`` (B, T, 4).
Evaluation turns every sample into a record (``index``, ``image``, ``phrase``, ``pred``, ``gt``, ``iou``,
``hit``, ``centre_hit``; boxes in original image pixels, docs/behaviour.md §7) in dataset order.

Video evaluation streams each video's frames once: :func:`evaluate_video` computes every frame's backbone
features a single time and co-grounds the (up to 5) windows that contain it from those features, where the
reference recomputes the backbone for every window; :func:`evaluate_video_windows` is the reference method,
kept for comparison and benchmarks. Both give the same predictions.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from app.cache import letterbox_meta, write_cache
from app.stream import ground_stream
from model.losses import GroundingCriterion, build_targets
from utils.amp import autocast, outputs_to_float32
from utils.box_ops import box_iou
from utils.distributed import all_reduce_sum
from utils.geometry import Geometry, centre_cell, decode_topk
from utils.letterbox import boxes_to_original, gt_to_original
from utils.progress import progress_bar
from utils.windows import EVAL_FRAMES, window_centre

META_KEYS = ("boxes", "ratio", "dw", "dh", "orig_size")


# ----------------------------------------------------------------------------------------------- training

def training_step_inputs(batch: dict, device: torch.device) -> tuple[tuple, Tensor]:
    """Model inputs and letterboxed target boxes of a training batch.

    Video samples use the training ('pairs') layout: 2 frames per sample, both grounded, so the targets are
    the (B*2, 4) boxes in the model's [b0f0, b0f1, b1f0, ...] order.
    """
    word_id = batch["word_id"].to(device, non_blocking=True)
    if "images" in batch:
        images = batch["images"].to(device, non_blocking=True)  # (B, 2, 3, S, S)
        return (images, word_id, "pairs"), batch["boxes"].flatten(0, 1).to(device)  # (2B, 4)
    return (batch["image"].to(device, non_blocking=True), word_id), batch["box"].to(device)


def train_one_epoch(
    model: nn.Module,
    criterion: GroundingCriterion,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    epoch: int,
    geometry: Geometry,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    print_freq: int = 50,
    logger: logging.Logger | None = None,
    progress: bool = True,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch's mean weighted losses (averaged over all processes).

    ``lr_scheduler``, if given, is stepped after every optimiser step (a per-iteration schedule). Raises
    ``FloatingPointError`` on a non-finite loss (the last checkpoint stays as it was).
    """
    model.train()
    criterion.train()
    sums: dict[str, float] = defaultdict(float)
    steps = 0
    bar = progress_bar(loader, enabled=progress, leave=False, desc=f"epoch {epoch}", unit="batch")
    for it, batch in enumerate(bar):
        inputs, boxes = training_step_inputs(batch, device)
        with autocast(device, amp_dtype):
            outputs = model(*inputs)
        targets = build_targets(boxes.float(), geometry.image_size, geometry.anchors, geometry.anchor_imsize)
        loss_dict = criterion(outputs_to_float32(outputs), targets)
        weighted = {k: v * criterion.weight_dict[k] for k, v in loss_dict.items()}
        loss = sum(weighted.values())
        values = torch.stack([loss, *weighted.values()]).detach().tolist()  # one device sync per step
        if not math.isfinite(values[0]):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            raise FloatingPointError(f"non-finite loss {values[0]} at epoch {epoch}, iteration {it} ({parts}); "
                                     "stopping (lower --lr, or train without --amp)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        steps += 1
        for k, v in zip(["loss", *weighted], values):
            sums[k] += v
        bar.set_postfix(loss=f"{sums['loss'] / steps:.3f}")
        if logger is not None and print_freq > 0 and (it + 1) % print_freq == 0:
            logger.info("epoch %d iter %d/%s  %s  lr %.3g", epoch, it + 1, _len(loader),
                        "  ".join(f"{k} {v / steps:.4f}" for k, v in sums.items()),
                        optimizer.param_groups[0]["lr"])
        if lr_scheduler is not None:
            lr_scheduler.step()
    totals = all_reduce_sum(torch.tensor([steps, *sums.values()], dtype=torch.float64, device=device))
    return {k: (v / max(totals[0].item(), 1)) for k, v in zip(sums, totals[1:].tolist())}


def _len(loader: Iterable) -> str:
    try:
        return str(len(loader))  # type: ignore[arg-type]
    except TypeError:
        return "?"


# --------------------------------------------------------------------------------------------- evaluation

def score_predictions(
    pred_anchor: list[Tensor], meta: dict[str, Any], geometry: Geometry
) -> list[dict[str, Any]]:
    """Records of a batch of predictions (docs/behaviour.md §7): arg-max box and ground truth in original pixels, IoU,
    hits.

    ``meta`` holds the grounded frame's ``boxes`` (B, 4) letterboxed ground truth, ``ratio``/``dw``/``dh`` (B,),
    ``orig_size`` (B, 2) as (h, w), and ``index``, ``image_path``, ``phrase`` (length B).
    """
    decoded = decode_topk(pred_anchor, geometry.image_size, geometry.anchors, geometry.anchor_imsize, k=1)
    device = decoded.boxes.device
    pred = boxes_to_original(decoded.boxes[:, 0], *letterbox_meta(meta, device))  # (B, 4)
    target = centre_cell(meta["boxes"].to(device), geometry.image_size, geometry.anchors, geometry.anchor_imsize)
    centre_hit = (decoded.gi[:, 0] == target.gi) & (decoded.gj[:, 0] == target.gj)
    return score_boxes(pred, meta, geometry.image_size, centre_hit)


def score_boxes(pred: Tensor, meta: dict[str, Any], image_size: int, centre_hit: Tensor | None = None
                ) -> list[dict[str, Any]]:
    """Records of (B, 4) predicted boxes already in original pixels against the ground truth in ``meta``."""
    gt = gt_to_original(meta["boxes"].to(pred.device), image_size, *letterbox_meta(meta, pred.device))  # (B, 4)
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


def _grounded_frame_meta(batch: dict) -> dict[str, Any]:
    """The per-sample evaluation metadata of the grounded frame (the centre of a video window)."""
    if "images" in batch:
        centre = window_centre(batch["images"].shape[1])
        meta = {k: batch[k][:, centre] for k in META_KEYS}
    else:
        meta = {"boxes": batch["box"], **{k: batch[k] for k in META_KEYS[1:]}}
    meta.update({k: batch[k] for k in ("index", "image_path", "phrase", "video", "frame") if k in batch})
    return meta


@torch.inference_mode()
def evaluate_images(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    geometry: Geometry,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate the image model (SL-Att) on ``loader``; one record per sample, in loader order."""
    model.eval()
    records: list[dict[str, Any]] = []
    for batch in progress_bar(loader, enabled=progress, leave=False, desc="evaluate", unit="batch"):
        with autocast(device, amp_dtype):
            outputs = model(batch["image"].to(device), batch["word_id"].to(device))
        records += score_predictions(outputs_to_float32(outputs)["pred_anchor"], _grounded_frame_meta(batch), geometry)
    return records


@torch.inference_mode()
def evaluate_video_windows(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    geometry: Geometry,
    amp_dtype: torch.dtype | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Reference method: every window (B, T, 3, S, S) from images, the backbone run for each of its frames.

    As the reference's test loop (batch size 1, docs/behaviour.md §7), one window goes through the model at a
    time whatever the loader's batch size, so memory is that of one window's T frames.
    """
    model.eval()
    records: list[dict[str, Any]] = []
    for batch in progress_bar(loader, enabled=progress, leave=False, desc="evaluate (windows)", unit="batch"):
        meta = _grounded_frame_meta(batch)
        for b in range(batch["images"].shape[0]):
            with autocast(device, amp_dtype):
                outputs = model(batch["images"][b : b + 1].to(device), batch["word_id"][b : b + 1].to(device),
                                "window")
            outputs = outputs_to_float32(outputs)
            window_meta = {k: v[b : b + 1] for k, v in meta.items()}
            records += score_predictions(outputs["pred_anchor"], window_meta, geometry)
            if cache_dir is not None:
                write_cache(outputs, window_meta, geometry, cache_dir)
    return records


@torch.inference_mode()
def evaluate_video(
    model: nn.Module,
    clip_loader: Iterable[dict],
    device: torch.device,
    geometry: Geometry,
    num_frames: int = EVAL_FRAMES,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate the video model with k-frame windows, computing each distinct frame's features once per test run.

    ``clip_loader`` yields :func:`dataset.vid_loader.collate_clip_frames` batches of
    ``VIDDataset.clip_frames()``: index entries over the same frames (tubes, sentences) share the features.
    Returns the records in dataset (index) order.
    """
    records: list[dict[str, Any]] = []
    bar = progress_bar(clip_loader, enabled=progress, leave=False, desc="evaluate (video)", unit="batch")
    for outputs, meta in ground_stream(model, bar, device, num_frames, batch_size, amp_dtype):
        records += score_predictions(outputs["pred_anchor"], meta, geometry)
        if cache_dir is not None:
            write_cache(outputs, meta, geometry, cache_dir)
    return sorted(records, key=lambda r: r["index"])


# ---------------------------------------------------------------------------------------------- summaries

def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy (IoU > 0.5), mean IoU, and centre accuracy where the records carry it, of evaluation records."""
    n = len(records)
    summary: dict[str, float] = {"count": n}
    summary["accuracy"] = sum(r["hit"] for r in records) / n if n else float("nan")
    summary["miou"] = sum(r["iou"] for r in records) / n if n else float("nan")
    if n and all("centre_hit" in r for r in records):
        summary["centre_accuracy"] = sum(r["centre_hit"] for r in records) / n
    return summary
