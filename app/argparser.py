"""Command-line flags of the entry scripts, in parent parsers that each script combines with ``parents=``.

Flag names follow the reference scripts (``--size``, ``--time``, ``--lstm``, ...) so their README commands
work verbatim; every string option with a fixed set of values has ``choices=``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dataset.names import IMAGE_DATASETS, SPLITS, VIDEO_DATASETS
from model import DEFAULT_CFG
from utils.cli import (
    ArgumentParser,
    gpu_ids,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_multiple_of,
    seed,
)
from utils.geometry import STRIDES
from utils.windows import EVAL_FRAMES, TRAIN_FRAMES

DEFAULT_DARKNET_WEIGHTS = Path("saved_models") / "yolov3.weights"
image_size = positive_multiple_of(STRIDES[0])  # letterboxed sizes are multiples of the coarsest stride


def _parent(title: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    parser = argparse.ArgumentParser(add_help=False)
    return parser, parser.add_argument_group(title)


def data_parser(video: bool, loading: bool = True) -> argparse.ArgumentParser:
    """Dataset flags; ``loading`` adds ``--workers`` (scripts that decode images)."""
    parser, group = _parent("data")
    datasets = VIDEO_DATASETS if video else IMAGE_DATASETS
    group.add_argument("--dataset", default=datasets[0], choices=datasets, help="dataset name (index folder)")
    group.add_argument("--data_root", default="./data", help="root of the images / video frames")
    group.add_argument("--split_root", default="data", help="root of the index files: <split_root>/<dataset>/")
    group.add_argument("--size", type=image_size, default=256, help="letterboxed image size (multiple of 32)")
    if loading:
        group.add_argument("--workers", type=non_negative_int, default=4, help="data loading workers per process")
    return parser


def window_frames(text: str) -> int:
    """``--num_frame_k``: what the model can ground, frame pairs (training) or an odd window of >= 3 frames."""
    value = positive_int(text)
    if value != TRAIN_FRAMES and (value < 3 or value % 2 == 0):
        raise argparse.ArgumentTypeError(f"expected {TRAIN_FRAMES} (training pairs) or an odd number >= 3 "
                                         f"(evaluation windows around the centre frame), got {text!r}")
    return value


def window_parser() -> argparse.ArgumentParser:
    """``--num_frame_k``: frames per video sample (docs/behaviour.md §1)."""
    parser, group = _parent("windows")
    group.add_argument("--num_frame_k", type=window_frames, default=None,
                       help=f"frames per sample: {TRAIN_FRAMES} to train (pairs), {EVAL_FRAMES} to evaluate and "
                            f"post-process (windows); default: {TRAIN_FRAMES} for training, {EVAL_FRAMES} otherwise")
    return parser


def run_parser() -> argparse.ArgumentParser:
    """``--savename``, ``--log_dir``, ``--no_progress``: how a run is named and reports (every script)."""
    parser, group = _parent("run")
    group.add_argument("--savename", default="default",
                       help="run name: the log file <log_dir>/<savename>.log (<savename>_test.log for --test), "
                            "and for training the checkpoints, for --cache the default cache folder")
    group.add_argument("--log_dir", default="logs", help="folder of the log files")
    group.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser


def model_parser(from_checkpoint: bool = False) -> argparse.ArgumentParser:
    """The model's flags. ``from_checkpoint`` (grounding with a trained checkpoint): no ``--lstm``, and each
    default is None, meaning the checkpoint's setting, else the reference's (the value named in the help)."""
    parser, group = _parent("model")

    def add(flag: str, default: object, help_text: str, **kwargs: object) -> None:
        if from_checkpoint:
            default, help_text = None, f"{help_text} (default: the checkpoint's, else {kwargs.pop('reference')})"
        kwargs.pop("reference", None)
        group.add_argument(flag, default=default, help=help_text, **kwargs)

    if not from_checkpoint:
        group.add_argument("--lstm", action="store_true",
                           help="bidirectional-LSTM language encoder (required: the reference's BERT branch cannot "
                                "build these models, docs/behaviour.md §2)")
    group.add_argument("--corpus", default=None,
                       help="vocabulary file (default: " + ("the checkpoint's words" if from_checkpoint else
                                                            "<split_root>/<dataset>/corpus.pth")
                            + "); a released checkpoint needs the corpus it was trained with")
    add("--time", 20, "maximum query length in tokens", type=positive_int, reference=20)
    add("--cfg", str(DEFAULT_CFG), "Darknet cfg of the backbone (model/yolov3.cfg, or model/yolov3_small.cfg for "
        "CPUs)", reference="model/yolov3.cfg")
    add("--emb_size", 512, "joint embedding size (512 in the paper)", type=positive_int, reference=512)
    add("--light", False, "light grounding head (one conv per scale)", action="store_true", reference="off")
    add("--anchor_imsize", 416, "image size the anchors are given in", type=positive_int, reference=416)
    return parser


def training_parser() -> argparse.ArgumentParser:
    parser, group = _parent("training")
    group.add_argument("--batch_size", type=positive_int, default=8,
                       help="samples per process and step (at test time: windows or images per forward)")
    group.add_argument("--lr", type=positive_float, default=1e-4,
                       help="learning rate (the backbone's is scaled, below)")
    group.add_argument("--backbone_lr_scale", type=non_negative_float, default=0.1,
                       help="the Darknet backbone's learning rate is lr x this (0.1 in the reference)")
    group.add_argument("--freeze_backbone", action="store_true",
                       help="keep the Darknet backbone fixed (no gradients, batch norm statistics kept): for "
                            "pretrained weights, and much cheaper per step")
    group.add_argument("--power", type=non_negative_float, default=0.9,
                       help="poly learning-rate decay power (0: constant)")
    group.add_argument("--nb_epoch", type=positive_int, default=100, help="number of training epochs")
    group.add_argument("--lr_per_iter", action="store_true",
                       help="apply the poly decay every iteration (the reference steps it once per epoch)")
    group.add_argument("--warmup_iters", type=non_negative_int, default=0,
                       help="linear learning-rate warm-up iterations")
    group.add_argument("--optimizer", default="RMSprop", choices=("RMSprop", "adam", "adamw", "sgd"),
                       help="optimiser (RMSprop in the reference)")
    group.add_argument("--weight_decay", type=non_negative_float, default=5e-4,
                       help="weight decay (5e-4 in the reference)")
    group.add_argument("--no_augment", action="store_true",
                       help="train without the flip / colour / affine augmentation of the reference")
    group.add_argument("--pretrain", default="",
                       help="initialise from a grounding checkpoint's matching keys (e.g. SL-Att for CG-SL-Att)")
    group.add_argument("--darknet_weights", default=None,
                       help="Darknet .weights for the backbone when training from scratch (neither --pretrain nor "
                            f"--resume); default: {DEFAULT_DARKNET_WEIGHTS} if that file exists, else random "
                            "weights; a path given here must exist; '' for random weights")
    group.add_argument("--resume", default="", help="checkpoint to resume training from, or to evaluate")
    group.add_argument("--seed", type=seed, default=13,
                       help="random seed: Python seed, numpy seed+1, torch seed+2 (13/14/15 as the reference)")
    group.add_argument("--save_dir", default="saved_models", help="folder of the checkpoints")
    group.add_argument("--print_freq", type=non_negative_int, default=50,
                       help="log the running losses every N iterations (0: only per epoch)")
    group.add_argument("--val_split", default=None, choices=SPLITS,
                       help="split validated after each epoch (default: test for videos, val for images)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms (bit-exact resume on GPU; slower)")
    return parser


def evaluation_parser() -> argparse.ArgumentParser:
    parser, group = _parent("evaluation")
    group.add_argument("--test", action="store_true", help="evaluate --resume instead of training")
    return parser


def output_parser() -> argparse.ArgumentParser:
    """``--test_split`` and what an evaluation writes: ``--save_pred``, ``--save_plot``, ``--max_plots``,
    ``--overwrite`` (every evaluating command has them)."""
    parser, group = _parent("evaluation outputs")
    group.add_argument("--test_split", default=None, choices=SPLITS,
                       help="split evaluated (default: test for videos; for images testB on unc/unc+ as the "
                            "reference, test otherwise)")
    group.add_argument("--save_pred", default=None,
                       help="write predictions as JSON Lines, one record per evaluated sample in dataset order")
    group.add_argument("--save_plot", default=None,
                       help="folder for images with the predicted (red) and ground-truth (green) boxes")
    group.add_argument("--max_plots", type=positive_int, default=200, help="at most this many --save_plot images")
    group.add_argument("--overwrite", action="store_true",
                       help="allow replacing existing predictions, plots, caches and checkpoints")
    return parser


def runtime_parser() -> argparse.ArgumentParser:
    parser, group = _parent("runtime")
    group.add_argument("--gpu", default=None, type=gpu_ids,
                       help="CUDA device ids, e.g. '0' or '0,1' (sets CUDA_VISIBLE_DEVICES); without CUDA the "
                            "script runs on the CPU")
    group.add_argument("--amp", action="store_true", help="mixed precision (default dtype: bf16 on CPU, fp16 on CUDA)")
    group.add_argument("--amp_dtype", default=None, choices=("bf16", "fp16"), help="autocast dtype for --amp")
    return parser


def script_parser(description: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    return ArgumentParser(description=description, parents=parents,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def grounding_parsers(video: bool) -> list[argparse.ArgumentParser]:
    """Data, model, training, evaluation (video: + window evaluation and cache) and runtime flags: what the
    training/testing scripts share."""
    parsers = [data_parser(video), model_parser(), training_parser(), evaluation_parser(), output_parser(),
               runtime_parser(), run_parser()]
    return [*parsers, window_parser(), video_evaluation_parser()] if video else parsers


def reference_only_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[type | None, str]]) -> None:
    """Flags a script accepts so that the reference README's command line runs verbatim, though they do
    nothing there: ``{flag: (value type or None for a switch, what the script does instead)}``."""
    group = parser.add_argument_group("accepted for the reference command line")
    for flag, (kind, instead) in flags.items():
        help_text = f"accepted for the reference command line; {instead}"
        if kind is None:
            group.add_argument(flag, action="store_true", help=help_text)
        else:
            group.add_argument(flag, type=kind, default=None, help=help_text)


def video_evaluation_parser() -> argparse.ArgumentParser:
    """``--eval_method``, ``--cache`` and ``--cache_dir``: how the video scripts evaluate (docs/behaviour.md §7, §8)."""
    parser, group = _parent("video evaluation")
    group.add_argument("--eval_method", default="stream", choices=("stream", "windows"),
                       help="stream: each frame's features computed once (default); windows: recomputed for "
                            "every window as the reference does (same predictions)")
    group.add_argument("--cache", action="store_true",
                       help="with --test: write the top-5 candidates of every test frame (docs/behaviour.md §8) "
                            "under --cache_dir")
    group.add_argument("--cache_dir", default=None, help="cache folder (default ./cache/<savename>)")
    return parser
