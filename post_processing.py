"""Post-processing (docs/behaviour.md §8): re-score each test frame's cached top-5 candidates by how well they match the
candidates of the other frames of its 5-frame window, then report accuracy against the ground truth.

    python post_processing.py --data_root ./data/ --dataset VID --gpu 0 --savename model_post_processing \\
        --batch_size 16 --lstm --test --cache_dir ./cache/cgslatt

--savename names the log file (<log_dir>/<savename>.log; default post_processing_<cache folder name>).

Reads caches written by test_semantic_attention_cogrounding.py --cache and the authors' published cache
folder alike (<cache_dir>/<video_dir>/<frame_stem>_<global frame index>.pth).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from app.argparser import (
    data_parser,
    output_parser,
    positive_int,
    reference_only_flags,
    run_parser,
    script_parser,
    window_parser,
)
from app.builders import ignored_flags, setup_logger
from app.cache import FRAMES_PER_CHUNK, cache_source, post_process, recorded_source
from app.checks import check_outputs, check_window_frames
from app.pipeline import report, video_test_split
from app.records import score_boxes
from app.stream import collate_meta
from dataset.vid_loader import VIDDataset
from utils.cli import given_flags, run_main
from utils.windows import EVAL_FRAMES


def get_args_parser() -> argparse.ArgumentParser:
    parents = [data_parser(video=True, loading=False), window_parser(), output_parser(), run_parser()]
    parser = script_parser(__doc__, parents)
    parser.set_defaults(savename=None)
    group = parser.add_argument_group("post-processing")
    group.add_argument("--cache_dir", required=True, help="the cache folder to re-score")
    group.add_argument("--batch_size", type=positive_int, default=FRAMES_PER_CHUNK,
                       help="frames re-scored at once (bounds the memory; the result does not depend on it)")
    reference_only_flags(parser, {
        "--gpu": (str, "post-processing re-scores cached vectors on the CPU"),
        "--lstm": (None, "post-processing runs no text encoder"),
        "--test": (None, "post-processing always scores --test_split"),
    })
    return parser


def main(args: argparse.Namespace) -> None:
    check_window_frames(args, training=False)
    with check_outputs(args, read={"--cache_dir": Path(args.cache_dir)}):
        run(args)


def run(args: argparse.Namespace) -> None:
    log_name = args.savename or f"post_processing_{Path(args.cache_dir).name}"
    logger = setup_logger(Path(args.log_dir) / f"{log_name}.log")
    for note in ignored_flags(args):
        logger.warning("warning: %s", note)
    size = recorded_source(args.cache_dir).get("size")
    if isinstance(size, int) and size != args.size and "size" not in given_flags(args):
        logger.info("note: --size %d, the input size the cache records", size)
        args.size = size
    split, num_frames = video_test_split(args), args.num_frame_k or EVAL_FRAMES
    dataset = VIDDataset(args.data_root, args.split_root, args.dataset, split, corpus=None,
                         image_size=args.size, num_frames=num_frames)
    videos = [[path for path, _, _ in video] for video in dataset.videos]
    picks = post_process(videos, args.cache_dir, num_frames=num_frames, progress=not args.no_progress,
                          frames_per_chunk=args.batch_size, index=dataset.index_path,
                          source=cache_source(args.dataset, split, dataset.index_path, args.size))
    metas = [dataset.frame_meta(i) for i in range(len(dataset))]
    records = score_boxes(torch.stack([pick.box for pick in picks]), collate_meta(metas), args.size)
    report(args, logger, records, f"{args.dataset} {split} after post-processing", lambda p: dataset.root / p)


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
