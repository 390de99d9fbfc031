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
from app.builders import build_corpus, build_model, build_video_dataset, inference_config, setup_runtime
from app.checks import check_before_work
from app.pipeline import run_video_test, train
from utils.cli import run_main
from utils.io import UserInputError
from utils.windows import EVAL_FRAMES, TRAIN_FRAMES


def get_args_parser() -> argparse.ArgumentParser:
    return script_parser(__doc__, grounding_parsers(video=True))


def main(args: argparse.Namespace) -> None:
    with check_before_work(args, training=not args.test, cache=args.test and args.cache):
        run(args)


def run(args: argparse.Namespace) -> None:
    rt = setup_runtime(args, args.savename if not args.test else f"{args.savename}_test")
    corpus = build_corpus(args)
    model = build_model(args, len(corpus), "video").to(rt.device)
    if args.test:
        run_video_test(args, rt, model, corpus)
        return
    if (args.num_frame_k or TRAIN_FRAMES) != TRAIN_FRAMES:
        raise UserInputError(f"--num_frame_k {args.num_frame_k}: training uses frame pairs ({TRAIN_FRAMES})")
    train_set = build_video_dataset(args, "train", corpus, TRAIN_FRAMES, augment=not args.no_augment,
                                    training=True)
    val_set = build_video_dataset(args, args.val_split or "test", corpus, EVAL_FRAMES, augment=False)
    rt.logger.info("training on %d frames of %d videos, validating on %d frames", len(train_set),
                   len(train_set.videos), len(val_set))
    train(args, rt, model, train_set, val_set, inference_config(args, corpus, "video"))


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
