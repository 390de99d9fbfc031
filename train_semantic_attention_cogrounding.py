"""Train CG-SL-Att (co-grounding with semantic attention) on videos in the VID-Sentence format.

    python train_semantic_attention_cogrounding.py --data_root ./data --dataset VID --gpu 0 \\
        --savename cgslatt --batch_size 8 --lstm

Training pairs (frames t-1, t; docs/behaviour.md §6) with validation by 5-frame windows after each epoch; checkpoints
<save_dir>/<savename>_checkpoint.pth.tar and <savename>_model_best.pth.tar in the reference format.
Multi-GPU: torchrun --nproc_per_node N train_semantic_attention_cogrounding.py <same flags>.
With --test --resume CKPT it evaluates instead (as test_semantic_attention_cogrounding.py).
"""
from __future__ import annotations

import argparse

from app.argparser import grounding_parsers, script_parser
from app.builders import build_corpus, build_test_model, setup_runtime
from app.checks import check_before_work
from app.pipeline import build_training_run, run_video_test, train
from utils.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    return script_parser(__doc__, grounding_parsers(video=True))


def main(args: argparse.Namespace) -> None:
    with check_before_work(args, training=not args.test, cache=args.test and args.cache):
        run(args)


def run(args: argparse.Namespace) -> None:
    rt = setup_runtime(args, args.savename if not args.test else f"{args.savename}_test", training=not args.test)
    corpus = build_corpus(args)
    if args.test:
        run_video_test(args, rt, build_test_model(args, rt, len(corpus), "video"), corpus)
        return
    train(args, rt, build_training_run(args, rt, corpus, "video"))


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
