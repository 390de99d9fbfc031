"""Evaluate CG-SL-Att with 5-frame windows (docs/behaviour.md §7) and optionally write the §8 cache.

    python test_semantic_attention_cogrounding.py --data_root ./data --dataset VID --gpu 0 \\
        --lstm --test --resume saved_models/VID_cogrounding_semantic_attn.pth.tar --cache

Prints accuracy (IoU > 0.5), mean IoU and centre accuracy. Each frame's backbone runs once and is reused by
the windows that contain it (--eval_method windows recomputes every window, as the reference does; same
predictions). --cache writes <cache_dir>/<video_dir>/<frame_stem>_<index>.pth for post_processing.py.
"""
from __future__ import annotations

import argparse

from app.argparser import grounding_parsers, script_parser
from app.builders import build_corpus, build_test_model, setup_runtime
from app.checks import check_before_work
from app.pipeline import run_video_test
from utils.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    return script_parser(__doc__, grounding_parsers(video=True))


def main(args: argparse.Namespace) -> None:
    with check_before_work(args, training=False, cache=args.cache):
        run(args)


def run(args: argparse.Namespace) -> None:
    rt = setup_runtime(args, f"{args.savename}_test")
    corpus = build_corpus(args)
    model = build_test_model(args, rt, len(corpus), "video")
    run_video_test(args, rt, model, corpus)


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
