"""Post-processing (docs/behaviour.md §8): re-score each test frame's cached top-5 candidates by how well they match the
candidates of the other frames of its 5-frame window, then report accuracy against the ground truth.

    python post_processing.py --data_root ./data/ --dataset VID --lstm --test --cache_dir ./cache/cgslatt

Reads caches written by test_semantic_attention_cogrounding.py --cache and the authors' published cache
folder alike (<cache_dir>/<video_dir>/<frame_stem>_<global frame index>.pth).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from app.argparser import add_output_flags, data_parser, positive_int, script_parser
from app.builders import setup_logger
from app.checks import check_before_work
from app.engine import collate_meta, score_boxes
from app.pipeline import report
from dataset.names import SPLITS
from dataset.vid_loader import VIDDataset
from utils.cli import run_main
from utils.postprocess import post_process
from utils.windows import EVAL_FRAMES


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__, [data_parser(video=True, loading=False)])
    group = parser.add_argument_group("post-processing")
    group.add_argument("--cache_dir", required=True, help="the cache folder to re-score")
    group.add_argument("--test_split", default="test", choices=SPLITS, help="the split the cache was written for")
    group.add_argument("--num_frame_k", type=positive_int, default=EVAL_FRAMES, help="window length (5 in the paper)")
    group.add_argument("--lstm", action="store_true",
                       help="accepted for the reference command line; post-processing runs no text encoder")
    group.add_argument("--test", action="store_true", help="accepted for the reference command line")
    group.add_argument("--log_dir", default="logs", help="folder of the log file")
    group.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    add_output_flags(group)
    return parser


def main(args: argparse.Namespace) -> None:
    check_before_work(args)
    logger = setup_logger(Path(args.log_dir) / f"post_processing_{Path(args.cache_dir).name}.log")
    dataset = VIDDataset(args.data_root, args.split_root, args.dataset, args.test_split, corpus=None,
                         image_size=args.size, num_frames=args.num_frame_k)
    videos = [[path for path, _, _ in video] for video in dataset.videos]
    chosen = post_process(videos, args.cache_dir, num_frames=args.num_frame_k, progress=not args.no_progress)
    metas = [dataset.frame_meta(i) for i in range(len(dataset))]
    records = score_boxes(torch.stack([c["box"] for c in chosen]), collate_meta(metas), args.size)
    report(args, logger, records, f"{args.dataset} {args.test_split} after post-processing",
           lambda p: dataset.root / p)


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
