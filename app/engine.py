"""Training and evaluation loops shared by the entry scripts (after DETR's ``engine.py``).

Batches are the default-collated dicts of the loaders (see ``dataset/``), one layout for both models:
``images`` (B, T, 3, S, S), ``boxes`` (B, T, 4) and their ``letterbox`` (:class:`utils.letterbox.Letterbox`,
fields (B, T)), with T = 1 for the image datasets.
Evaluation turns every sample into an evaluation record (:mod:`app.records`) in dataset order; the streaming
of frames into windows is :mod:`app.stream`, the cache :mod:`app.cache`.

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

from app.cache import write_cache
from app.records import score_predictions
from app.stream import ground_stream
from model.losses import GroundingCriterion, build_targets
from utils.amp import autocast, outputs_to_float32
from utils.distributed import all_reduce_sum
from utils.geometry import Geometry
from utils.letterbox import Letterbox
from utils.progress import progress_bar
from utils.windows import EVAL_FRAMES, window_centre

# ----------------------------------------------------------------------------------------------- training

def training_step_inputs(batch: dict, device: torch.device) -> tuple[tuple, Tensor]:
    """Model inputs and letterboxed target boxes of a training batch.

    The training ('pairs') layout grounds every frame of a sample (2 for the video model, 1 for the image model),
    so the targets are the (B*T, 4) boxes in the model's [b0f0, b0f1, b1f0, ...] order.
    """
    images = batch["images"].to(device, non_blocking=True)  # (B, T, 3, S, S)
    word_id = batch["word_id"].to(device, non_blocking=True)
    return (images, word_id, "pairs"), batch["boxes"].flatten(0, 1).to(device)  # (B*T, 4)


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

def _grounded_frame_meta(batch: dict) -> dict[str, Any]:
    """The per-sample evaluation metadata of the grounded frame (the centre of a video window)."""
    centre = window_centre(batch["images"].shape[1])
    meta = {"boxes": batch["boxes"][:, centre], "letterbox": batch["letterbox"].select((slice(None), centre))}
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
            outputs = model(batch["images"].to(device), batch["word_id"].to(device), "window")
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
            window_meta = {k: v.select(slice(b, b + 1)) if isinstance(v, Letterbox) else v[b : b + 1]
                           for k, v in meta.items()}
            records += score_predictions(outputs["pred_anchor"], window_meta, geometry)
            if cache_dir is not None:
                write_cache(outputs, window_meta, geometry, cache_dir)
    return records


@torch.inference_mode()
def evaluate_video(
    model: nn.Module,
    sequence_loader: Iterable[dict],
    device: torch.device,
    geometry: Geometry,
    num_frames: int = EVAL_FRAMES,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate the video model with k-frame windows, computing each distinct frame's features once per test run.

    ``sequence_loader`` yields :func:`dataset.vid_loader.collate_sequence_frames` batches of
    ``VIDDataset.sequence_frames()``: index entries over the same frames (tubes, sentences) share the features.
    Returns the records in dataset (index) order.
    """
    records: list[dict[str, Any]] = []
    bar = progress_bar(sequence_loader, enabled=progress, leave=False, desc="evaluate (video)", unit="batch")
    for outputs, meta in ground_stream(model, bar, device, num_frames, batch_size, amp_dtype):
        records += score_predictions(outputs["pred_anchor"], meta, geometry)
        if cache_dir is not None:
            write_cache(outputs, meta, geometry, cache_dir)
    return sorted(records, key=lambda r: r["index"])
