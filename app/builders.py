"""Builders from parsed command-line ``args``: runtime, data, model, optimiser.

With the entry scripts, this is the only code that reads ``args``; everything it builds takes plain values.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from app.argparser import DEFAULT_DARKNET_WEIGHTS
from dataset.common import default_corpus_path
from dataset.referit_loader import ReferDataset
from dataset.vid_loader import VIDDataset
from model import build_grounding_model
from utils.checkpoint import INFERENCE_KEY, load_matching_state, read_checkpoint
from utils.cli import given_flags
from utils.distributed import DistInfo, init_distributed_mode
from utils.geometry import Geometry
from utils.io import UserInputError, read_text
from utils.windows import EVAL_FRAMES, TRAIN_FRAMES
from utils.word_utils import Corpus, load_corpus

SGD_MOMENTUM = 0.99  # the reference's value
# the scripts' logger, then the libraries' (logging.getLogger(__name__))
LOGGERS = ("cgslatt", "app", "dataset", "utils")


@dataclass
class Runtime:
    """Where and how a script runs."""

    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None
    logger: logging.Logger
    progress: bool

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0


def setup_runtime(args: argparse.Namespace, log_name: str, training: bool = False) -> Runtime:
    """Device (``--gpu``), process group (torchrun), seeds, determinism, logger and AMP dtype; a warning for each
    flag the run (``training`` or evaluating) ignores."""
    if not args.lstm:
        raise UserInputError("pass --lstm: SL-Att and CG-SL-Att need the LSTM encoder's per-word features, so the "
                             "reference's BERT branch cannot build them and no BERT checkpoint of them exists")
    device_type = build_device(args).type
    dist = init_distributed_mode(device_type)
    device = torch.device("cuda", dist.local_rank) if device_type == "cuda" else torch.device("cpu")
    logger = setup_logger(Path(args.log_dir) / f"{log_name}.log", dist.rank == 0)
    if device_type == "cpu":
        logger.info("CUDA is not available: running on the CPU")
    for note in ignored_flags(args, training):
        logger.warning("warning: %s", note)
    seed_everything(args.seed + dist.rank)
    # float32 means float32: cuDNN would otherwise run convolutions in TF32 on Ampere and later GPUs, which moves
    # predictions away from the CPU's and the reference's; --amp is the fast path
    torch.backends.cudnn.allow_tf32 = False
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return Runtime(device, dist, build_amp_dtype(args, device_type), logger,
                   progress=not args.no_progress and dist.rank == 0)


def build_device(args: argparse.Namespace) -> torch.device:
    """``--gpu``: only the listed CUDA devices are visible (``CUDA_VISIBLE_DEVICES``); the first of them, or the
    first GPU, or the CPU without CUDA. A process of a multi-GPU run uses its local rank's instead."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def build_amp_dtype(args: argparse.Namespace, device_type: str) -> torch.dtype | None:
    """``--amp`` / ``--amp_dtype``: bf16 on the CPU, fp16 on CUDA by default; None without ``--amp``."""
    if not args.amp:
        return None
    name = args.amp_dtype or ("fp16" if device_type == "cuda" else "bf16")
    if device_type == "cpu" and name == "fp16":
        raise UserInputError("--amp_dtype fp16 needs CUDA; use bf16 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


# flags a test run does not use: training only
TRAINING_ONLY_FLAGS = ("lr", "backbone_lr_scale", "power", "nb_epoch", "lr_per_iter", "warmup_iters", "optimizer",
                       "weight_decay", "no_augment", "pretrain", "darknet_weights", "save_dir", "print_freq",
                       "val_split")
EVALUATION_ONLY_FLAGS = ("test_split", "save_pred", "save_plot", "max_plots", "cache", "cache_dir")


def ignored_flags(args: argparse.Namespace, training: bool = False) -> list[str]:
    """One line per flag given that this run (``training`` or not) would ignore (docs/behaviour.md §10)."""
    given = given_flags(args)
    notes = []
    if "amp_dtype" in given and not args.amp:
        notes.append(f"--amp_dtype {args.amp_dtype} is ignored without --amp (full precision)")
    if training:
        unused = [f"--{k}" for k in EVALUATION_ONLY_FLAGS if k in given]
        if unused:
            notes.append(f"{', '.join(unused)}: evaluation flags, ignored without --test")
        return notes
    if "cache_dir" in given and "cache" in vars(args) and not args.cache:
        notes.append("--cache_dir is ignored without --cache (add --cache to write the cache there)")
    if "max_plots" in given and not args.save_plot:
        notes.append("--max_plots is ignored without --save_plot")
    unused = [f"--{k}" for k in TRAINING_ONLY_FLAGS if k in given]
    if unused:
        notes.append(f"{', '.join(unused)}: training flags, ignored when evaluating")
    return notes


# stored inference setting (app.builders.inference_config) -> the flag it is the default of
INFERENCE_FLAGS = {"size": "size", "emb_size": "emb_size", "light": "light", "anchor_imsize": "anchor_imsize",
                   "max_query_len": "time"}


def apply_inference_settings(args: argparse.Namespace, checkpoint: dict, folder: Path) -> list[str]:
    """The settings ``checkpoint`` stores (ours, under ``inference``) become the defaults of their flags, as in
    ``ground.py``: a flag not given takes the stored value (the stored cfg is written into ``folder``), a given
    one that disagrees is used and noted. Returns the notes (one line each)."""
    saved = checkpoint.get(INFERENCE_KEY) or {}
    given = given_flags(args)
    notes = []
    for key, flag in INFERENCE_FLAGS.items():
        if key not in saved or saved[key] == getattr(args, flag):
            continue
        if flag in given:
            notes.append(f"--{flag} {getattr(args, flag)} differs from the {saved[key]} that {args.resume} was "
                         f"trained with; using --{flag} {getattr(args, flag)}")
        else:
            setattr(args, flag, saved[key])
    if "cfg" in saved and saved["cfg"] != read_text(args.cfg, "--cfg"):
        if "cfg" in given:
            notes.append(f"--cfg {args.cfg} is not the cfg {args.resume} was trained with "
                         f"({saved.get('cfg_name', 'stored in it')}); using --cfg {args.cfg}")
        else:
            args.cfg = str(stored_cfg(saved, folder))
    return notes


def stored_cfg(saved: dict, folder: Path) -> Path:
    """The cfg text a checkpoint stores (``inference``), as a file in ``folder`` (under its original name)."""
    path = Path(folder) / Path(saved.get("cfg_name") or "saved.cfg").name
    path.write_text(saved["cfg"], encoding="utf-8")
    return path


def seed_everything(seed: int) -> None:
    """The reference's seeds: Python ``seed``, numpy ``seed + 1``, torch ``seed + 2`` (13, 14, 15 by default)."""
    random.seed(seed)
    np.random.seed(seed + 1)  # noqa: NPY002 (the reference seeds numpy's global RNG)
    torch.manual_seed(seed + 2)


def setup_logger(path: Path, main_process: bool = True) -> logging.Logger:
    """Log to stdout and (main process) to ``path``; the library packages' loggers go to the same places."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handlers.append(handler)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers:
            if old not in handlers:
                old.close()
        logger.handlers = list(handlers)
        logger.propagate = False
        logger.setLevel(logging.INFO if main_process else logging.WARNING)
    return logging.getLogger(LOGGERS[0])


def build_geometry(args: argparse.Namespace) -> Geometry:
    return Geometry.for_dataset(args.dataset, args.size, args.anchor_imsize)


def build_corpus(args: argparse.Namespace) -> Corpus:
    """``--corpus``, or the dataset's ``<split_root>/<dataset>/corpus.pth``."""
    return load_corpus(args.corpus or default_corpus_path(args.split_root, args.dataset))


def inference_config(args: argparse.Namespace, corpus: Corpus, kind: str) -> dict:
    """What grounding with a checkpoint needs besides its weights (saved under ``inference``, read by
    :mod:`app.grounder`): model kind, the cfg's text, input and embedding sizes, anchors, corpus words."""
    return {"kind": kind, "cfg": read_text(args.cfg, "--cfg"), "cfg_name": Path(args.cfg).name, "size": args.size,
            "emb_size": args.emb_size, "light": args.light,
            "anchors": [list(a) for a in build_geometry(args).anchors], "anchor_imsize": args.anchor_imsize,
            "max_query_len": args.time, "words": list(corpus.dictionary.idx2word)}


def build_video_dataset(args: argparse.Namespace, split: str, corpus: Corpus, num_frames: int,
                        augment: bool, training: bool = False) -> VIDDataset:
    """The video set of ``split``; a ``training`` set leaves out samples with an empty ground-truth box."""
    return VIDDataset(args.data_root, args.split_root, args.dataset, split, corpus, image_size=args.size,
                      num_frames=num_frames, augment=augment, max_query_len=args.time, skip_empty_boxes=training)


def build_image_dataset(args: argparse.Namespace, split: str, corpus: Corpus, augment: bool,
                        training: bool = False) -> ReferDataset:
    """The image set of ``split``; a ``training`` set leaves out samples with an empty ground-truth box."""
    return ReferDataset(args.data_root, args.split_root, args.dataset, split, corpus, image_size=args.size,
                        augment=augment, max_query_len=args.time, skip_empty_boxes=training)


def build_training_sets(args: argparse.Namespace, corpus: Corpus, kind: str
                        ) -> tuple[VIDDataset | ReferDataset, VIDDataset | ReferDataset]:
    """The training and validation sets: frame pairs and 5-frame windows (``--val_split``, default test) for
    the video model, images (default val) for the image model."""
    if kind == "image":
        return (build_image_dataset(args, "train", corpus, augment=not args.no_augment, training=True),
                build_image_dataset(args, args.val_split or "val", corpus, augment=False))
    return (build_video_dataset(args, "train", corpus, TRAIN_FRAMES, augment=not args.no_augment, training=True),
            build_video_dataset(args, args.val_split or "test", corpus, EVAL_FRAMES, augment=False))


def build_train_loader(args: argparse.Namespace, dataset: Dataset, dist: DistInfo
                       ) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled, sharded over the processes, reshuffled per epoch from ``--seed`` (``sampler.set_epoch``)."""
    if len(dataset) < args.batch_size * dist.world_size:
        raise UserInputError(f"the training set has {len(dataset)} samples, fewer than one batch "
                             f"(--batch_size {args.batch_size} x {dist.world_size} processes)")
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=torch.cuda.is_available(),
                        persistent_workers=args.workers > 0)
    return loader, sampler


def build_eval_loader(args: argparse.Namespace, dataset: Dataset, indices: list[int] | None = None,
                      collate_fn: Callable[[list], Any] | None = None) -> DataLoader:
    """In-order loader over ``dataset`` (or the ``indices`` this process evaluates)."""
    subset = dataset if indices is None else Subset(dataset, indices)
    return DataLoader(subset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                      pin_memory=torch.cuda.is_available(), collate_fn=collate_fn)


def build_model(args: argparse.Namespace, vocab_size: int, kind: str) -> nn.Module:
    """The image (SL-Att) or video (CG-SL-Att) model of ``--cfg``/``--size``/``--emb_size``/``--light``, its backbone
    fixed with ``--freeze_backbone``.

    The Darknet detection heads, which grounding never runs, are frozen (they keep their checkpoint values
    and need no gradient, also under DistributedDataParallel).
    """
    model = build_grounding_model(kind, vocab_size, cfg_path=args.cfg, image_size=args.size,
                                  emb_size=args.emb_size, light=args.light)
    for param in model.visumodel.detection_parameters():
        param.requires_grad_(False)
    if args.freeze_backbone:
        model.visumodel.freeze()
    return model


def build_test_model(args: argparse.Namespace, rt: Runtime, vocab_size: int, kind: str) -> nn.Module:
    """The model to evaluate ``--resume`` with: the settings the checkpoint stores are the defaults of their flags
    (:func:`apply_inference_settings`; a given flag that disagrees is warned about), on ``rt.device``."""
    with tempfile.TemporaryDirectory() as folder:
        if args.resume:
            for note in apply_inference_settings(args, read_checkpoint(args.resume), Path(folder)):
                rt.logger.warning("warning: %s", note)
        return build_model(args, vocab_size, kind).to(rt.device)


def initialise_for_training(args: argparse.Namespace, model: nn.Module, logger: logging.Logger) -> None:
    """``--pretrain`` (matching keys), else ``--darknet_weights`` (default: the default path if that file exists)."""
    if args.pretrain:
        missing = load_matching_state(model, read_checkpoint(args.pretrain)["state_dict"], args.pretrain)
        logger.info("initialised from %s (%d tensors kept their initial values%s)", args.pretrain, len(missing),
                    f", e.g. {missing[0]}" if missing else "")
        return
    # an explicit --darknet_weights exists (app.checks); the default path is used only where it exists
    weights = args.darknet_weights if args.darknet_weights is not None else DEFAULT_DARKNET_WEIGHTS
    if weights and Path(weights).is_file():
        model.visumodel.load_darknet_weights(weights)
        logger.info("backbone initialised from %s", weights)
    else:
        logger.info("backbone initialised randomly (no --pretrain, and %s)",
                    "--darknet_weights ''" if args.darknet_weights == "" else f"no Darknet weights at {weights}")


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    """``--optimizer`` with ``--weight_decay``; group 0 = everything but the backbone, group 1 = the backbone.

    The groups' learning rates are set by :class:`PolyLR` (backbone: ``lr x --backbone_lr_scale``, a tenth in the
    reference, docs/behaviour.md §6).
    """
    backbone = {id(p) for p in model.visumodel.parameters()}
    rest = [p for p in model.parameters() if id(p) not in backbone and p.requires_grad]
    visual = [p for p in model.visumodel.parameters() if p.requires_grad]
    groups = [{"params": rest, "lr": args.lr}, {"params": visual, "lr": args.lr * args.backbone_lr_scale}]
    if args.optimizer == "RMSprop":
        return torch.optim.RMSprop(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=args.lr, momentum=SGD_MOMENTUM, weight_decay=args.weight_decay)


class PolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Poly decay ``lr (1 - progress / nb_epoch) ** power`` after a linear warm-up, stepped once per iteration
    (docs/behaviour.md §6).

    ``progress`` is in epochs: the epoch index (the reference), or ``epoch + iteration / steps_per_epoch`` with
    ``per_iter``. The warm-up multiplies by ``min(1, (i + 1) / warmup_iters)`` at global iteration ``i`` (none in
    the reference). Group ``g`` gets that value times ``scales[g]`` (group 1, the backbone: ``lr x
    backbone_lr_scale``). Unlike ``LambdaLR`` (``initial_lr x factor``) the value is computed in the formula's
    own order, so the rates are bit-identical to the reference's hand-set ones.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, nb_epoch: int, power: float,
                 steps_per_epoch: int, per_iter: bool = False, warmup_iters: int = 0,
                 scales: tuple[float, ...] = (1.0, 0.1), last_epoch: int = -1) -> None:
        if len(scales) != len(optimizer.param_groups):
            raise ValueError(f"{len(scales)} learning-rate scales for {len(optimizer.param_groups)} param groups")
        self.lr, self.nb_epoch, self.power = lr, nb_epoch, power
        self.steps_per_epoch, self.per_iter, self.warmup_iters = steps_per_epoch, per_iter, warmup_iters
        self.scales = list(scales)
        for group in optimizer.param_groups:  # a resumed scheduler (last_epoch >= 0) needs them; unused here
            group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch)

    def lr_at(self, iteration: int) -> float:
        """Group 0's learning rate at global iteration ``iteration`` (0-based, over all epochs)."""
        epoch, it = divmod(iteration, self.steps_per_epoch)
        progress = epoch + it / self.steps_per_epoch if self.per_iter else epoch
        lr = self.lr * (1 - progress / self.nb_epoch) ** self.power
        return lr * min(1.0, (iteration + 1) / self.warmup_iters) if self.warmup_iters > 0 else lr

    def get_lr(self) -> list[float]:
        lr = self.lr_at(self.last_epoch)
        return [lr * scale for scale in self.scales]


def build_lr_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                       start_iteration: int = 0) -> PolyLR:
    """``--lr`` with ``--power`` poly decay per epoch (or per iteration, ``--lr_per_iter``) over ``--nb_epoch``,
    ``--warmup_iters``, backbone at ``--backbone_lr_scale``; positioned at ``start_iteration`` (resume)."""
    return PolyLR(optimizer, args.lr, args.nb_epoch, args.power, steps_per_epoch, args.lr_per_iter,
                  args.warmup_iters, (1.0, args.backbone_lr_scale), last_epoch=start_iteration - 1)
