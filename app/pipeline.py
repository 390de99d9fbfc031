"""The wiring the entry scripts share: a training run built once and its epoch loop, evaluation over all processes,
reporting.

Like :mod:`app.builders`, this reads ``args``; the loops themselves are in :mod:`app.engine`.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from app.builders import (
    PolyLR,
    Runtime,
    build_eval_loader,
    build_geometry,
    build_image_dataset,
    build_lr_scheduler,
    build_model,
    build_optimizer,
    build_train_loader,
    build_training_sets,
    build_video_dataset,
    inference_config,
    initialise_for_training,
)
from app.cache import cache_source, default_cache_dir, writing_cache
from app.checks import checkpoint_paths
from app.engine import evaluate_images, evaluate_video, evaluate_video_windows, train_one_epoch
from app.predictions import save_plots, write_predictions
from app.records import summarize
from dataset.referit_loader import ReferDataset
from dataset.vid_loader import VIDDataset, collate_sequence_frames, group_videos
from model.losses import GroundingCriterion
from utils.checkpoint import (
    capture_rng_state,
    check_resume_flags,
    load_model_state,
    read_checkpoint,
    resume_training,
    save_training_checkpoint,
    training_flags,
)
from utils.cli import keeps
from utils.distributed import all_gather_objects, barrier
from utils.geometry import Geometry
from utils.io import UserInputError
from utils.windows import EVAL_FRAMES
from utils.word_utils import Corpus

Records = list[dict[str, Any]]


def load_weights_for_test(args: argparse.Namespace, model: nn.Module) -> None:
    if not args.resume:
        raise UserInputError("evaluation needs the checkpoint to evaluate: pass --resume CKPT")
    load_model_state(model, read_checkpoint(args.resume)["state_dict"], args.resume)


def _gather(records: Records) -> Records:
    return sorted(all_gather_objects(records), key=lambda r: r["index"])


def evaluate_image_split(args: argparse.Namespace, rt: Runtime, model: nn.Module, dataset: ReferDataset,
                         geometry: Geometry) -> Records:
    """All samples of ``dataset``, sharded over the processes; every process gets all records, in order."""
    indices = list(range(rt.dist.rank, len(dataset), rt.dist.world_size))
    loader = build_eval_loader(args, dataset, indices)
    return _gather(evaluate_images(model, loader, rt.device, geometry, rt.amp_dtype, rt.progress))


def evaluate_video_split(args: argparse.Namespace, rt: Runtime, model: nn.Module, dataset: VIDDataset,
                         geometry: Geometry, cache_dir: Path | None = None, method: str = "stream") -> Records:
    """Window evaluation of ``dataset`` (videos sharded over the processes), optionally writing the cache.

    ``method='stream'`` computes each distinct frame's features once (index entries over the same frames
    share them, so a process gets whole sequences); ``'windows'`` is the reference's recomputation.
    """
    if method == "windows":
        videos = range(rt.dist.rank, len(dataset.videos), rt.dist.world_size)
        wanted = set(videos)
        indices = [i for i, (v, _) in enumerate(dataset.samples) if v in wanted]
        loader = build_eval_loader(args, dataset, indices)
        records = evaluate_video_windows(model, loader, rt.device, geometry, rt.amp_dtype, cache_dir, rt.progress)
    else:
        sequences = group_videos(dataset.videos, range(len(dataset.videos)))[rt.dist.rank::rt.dist.world_size]
        frames = dataset.sequence_frames([v for sequence in sequences for v in sequence])
        loader = build_eval_loader(args, frames, collate_fn=collate_sequence_frames)
        records = evaluate_video(model, loader, rt.device, geometry, num_frames=dataset.num_frames,
                                 batch_size=args.batch_size, amp_dtype=rt.amp_dtype, cache_dir=cache_dir,
                                 progress=rt.progress)
    return _gather(records)


def report(args: argparse.Namespace, logger: logging.Logger, records: Records, title: str,
           resolve: Callable[[str], Path], is_main: bool = True) -> dict[str, float]:
    """Log accuracy / mean IoU / centre accuracy and write ``--save_pred`` and ``--save_plot`` (main process)."""
    summary = summarize(records)
    line = f"{title}: accuracy {summary['accuracy']:.4f}  mean IoU {summary['miou']:.4f}"
    if "centre_accuracy" in summary:
        line += f"  centre accuracy {summary['centre_accuracy']:.4f}"
    logger.info("%s  (%d samples)", line, summary["count"])
    kept: list[Path] = []
    with keeps(kept):
        if is_main and args.save_pred:
            kept.append(write_predictions(records, args.save_pred))
            logger.info("predictions written to %s", kept[-1])
        if is_main and args.save_plot:
            count = save_plots(records, args.save_plot, resolve, args.max_plots)
            logger.info("%d annotated images written to %s", count, args.save_plot)
    return summary


def wrap_ddp(model: nn.Module, rt: Runtime) -> nn.Module:
    if not rt.dist.distributed:
        return model
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def evaluate_split(args: argparse.Namespace, rt: Runtime, model: nn.Module, dataset: VIDDataset | ReferDataset,
                   geometry: Geometry) -> Records:
    """Validation: windows for a video dataset (``--eval_method``), images for an image dataset."""
    if isinstance(dataset, VIDDataset):
        return evaluate_video_split(args, rt, model, dataset, geometry, method=args.eval_method)
    return evaluate_image_split(args, rt, model, dataset, geometry)


@dataclass
class TrainingRun:
    """Everything a training run uses, built once by :func:`build_training_run`; ``start_epoch`` and
    ``best_accuracy`` are those of ``--resume`` (0 and -inf for a new run)."""

    model: nn.Module
    train_set: VIDDataset | ReferDataset
    val_set: VIDDataset | ReferDataset
    loader: DataLoader
    sampler: DistributedSampler
    optimizer: torch.optim.Optimizer
    lr_scheduler: PolyLR
    scaler: torch.amp.GradScaler | None
    criterion: GroundingCriterion
    geometry: Geometry
    inference: dict
    start_epoch: int
    best_accuracy: float


def build_training_run(args: argparse.Namespace, rt: Runtime, corpus: Corpus, kind: str) -> TrainingRun:
    """The model (``kind``), datasets, loader, optimiser, schedule and criterion of a training run, initialised
    (``--pretrain``, ``--darknet_weights``) or resumed from ``--resume`` with its flags checked."""
    model = build_model(args, len(corpus), kind).to(rt.device)
    train_set, val_set = build_training_sets(args, corpus, kind)
    if kind == "video":
        rt.logger.info("training on %d frames of %d videos, validating on %d frames", len(train_set),
                       len(train_set.videos), len(val_set))
    else:
        rt.logger.info("training on %d expressions, validating on %d", len(train_set), len(val_set))
    latest, best_path = checkpoint_paths(args)
    checkpoint = read_checkpoint(args.resume) if args.resume else {}
    if args.resume:
        check_resume_flags(vars(args), checkpoint, rt.logger)
    elif not args.overwrite and (latest.exists() or best_path.exists()):
        raise UserInputError(f"{latest} already exists: choose another --savename, --resume it, or pass "
                             "--overwrite to start over")
    else:
        initialise_for_training(args, model, rt.logger)
    geometry = build_geometry(args)
    loader, sampler = build_train_loader(args, train_set, rt.dist)
    optimizer = build_optimizer(args, model)
    scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
    start_epoch, best_accuracy = 0, float("-inf")
    if args.resume:
        start_epoch, best_accuracy, exact = resume_training(checkpoint, args.resume, model, optimizer, scaler,
                                                            rt.dist.rank, rt.dist.world_size)
        rt.logger.info("resumed from %s at epoch %d (best accuracy %.4f)%s", args.resume, start_epoch,
                       best_accuracy, "" if exact else "; it holds no RNG state for this number of processes, "
                       "so the run is not bit-exact")
    lr_scheduler = build_lr_scheduler(args, optimizer, len(loader), start_epoch * len(loader))
    if "lr_scheduler" in checkpoint:  # else the position above follows from the epoch
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    return TrainingRun(model, train_set, val_set, loader, sampler, optimizer, lr_scheduler, scaler,
                       GroundingCriterion().to(rt.device), geometry, inference_config(args, corpus, kind),
                       start_epoch, best_accuracy)


def train(args: argparse.Namespace, rt: Runtime, run: TrainingRun) -> float:
    """Train for ``--nb_epoch`` epochs from ``run.start_epoch``, validating after each epoch.

    Checkpoints (main process, atomic): ``<savename>_checkpoint.pth.tar`` after every epoch and
    ``<savename>_model_best.pth.tar`` when the validation accuracy improves, each with ``run.inference``
    (:func:`app.builders.inference_config`). Returns the best accuracy. Ctrl-C names the last complete
    checkpoint.
    """
    latest, _ = checkpoint_paths(args)
    with keeps(lambda: [latest] if latest.is_file() else [], "--resume it to go on"):
        return _train(args, rt, run)


def _train(args: argparse.Namespace, rt: Runtime, run: TrainingRun) -> float:
    latest, best_path = checkpoint_paths(args)
    trained = wrap_ddp(run.model, rt)
    steps = len(run.loader)
    best_accuracy = run.best_accuracy
    for epoch in range(run.start_epoch, args.nb_epoch):
        run.sampler.set_epoch(epoch)
        start = time.perf_counter()
        losses = train_one_epoch(trained, run.criterion, run.loader, run.optimizer, rt.device, epoch, run.geometry,
                                 scaler=run.scaler, amp_dtype=rt.amp_dtype, print_freq=args.print_freq,
                                 logger=rt.logger, progress=rt.progress, lr_scheduler=run.lr_scheduler)
        train_time = time.perf_counter() - start

        metrics = summarize(evaluate_split(args, rt, run.model, run.val_set, run.geometry))
        is_best = metrics["accuracy"] > best_accuracy
        best_accuracy = max(best_accuracy, metrics["accuracy"])
        rt.logger.info("epoch %d/%d  lr %.3g  %s  (%.0f s)  val accuracy %.4f  mean IoU %.4f  best %.4f",
                       epoch + 1, args.nb_epoch, run.lr_scheduler.lr_at((epoch + 1) * steps - 1),
                       "  ".join(f"{k} {v:.4f}" for k, v in losses.items()), train_time, metrics["accuracy"],
                       metrics["miou"], best_accuracy)

        rng_states = all_gather_objects([capture_rng_state()])
        if rt.is_main:
            for path in [latest, best_path] if is_best else [latest]:
                save_training_checkpoint(path, run.model, run.optimizer, epoch + 1, best_accuracy, run.scaler,
                                         rng_states, run.lr_scheduler, training_flags(vars(args)), run.inference)
        barrier()
    return best_accuracy


def video_test_split(args: argparse.Namespace) -> str:
    return args.test_split or "test"


def image_test_split(args: argparse.Namespace) -> str:
    """The reference evaluates testB; we default to it on unc/unc+ and to 'test' where there is no testB."""
    if args.test_split:
        return args.test_split
    return "testB" if args.dataset in ("unc", "unc+") else "test"


def run_video_test(args: argparse.Namespace, rt: Runtime, model: nn.Module, corpus: Corpus) -> dict[str, float]:
    """``--test``: evaluate ``--resume`` on the test split with windows, with the cache if ``--cache``."""
    load_weights_for_test(args, model)
    cache_dir = default_cache_dir(args) if args.cache else None
    split = video_test_split(args)
    dataset = build_video_dataset(args, split, corpus, args.num_frame_k or EVAL_FRAMES, augment=False)
    source = cache_source(args.dataset, split, dataset.index_path, args.size, args.resume) if cache_dir else None
    with writing_cache(cache_dir, source, rt.is_main) as staged:
        records = evaluate_video_split(args, rt, model, dataset, build_geometry(args), staged,
                                       method=args.eval_method)
    if cache_dir is not None and rt.is_main:
        rt.logger.info("cache written to %s", cache_dir)
    with keeps([cache_dir] if cache_dir is not None and rt.is_main else []):
        return report(args, rt.logger, records, f"{args.dataset} {split}", lambda p: dataset.root / p, rt.is_main)


def run_image_test(args: argparse.Namespace, rt: Runtime, model: nn.Module, corpus: Corpus) -> dict[str, float]:
    """``--test``: evaluate ``--resume`` on ``--test_split``."""
    load_weights_for_test(args, model)
    split = image_test_split(args)
    dataset = build_image_dataset(args, split, corpus, augment=False)
    records = evaluate_image_split(args, rt, model, dataset, build_geometry(args))
    return report(args, rt.logger, records, f"{args.dataset} {split}", lambda p: dataset.root / p, rt.is_main)
