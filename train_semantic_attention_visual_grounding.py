"""Train SL-Att (one-stage visual grounding with subject and location attention) on a RefCOCO-family set,
or evaluate it with --test.

    python train_semantic_attention_visual_grounding.py --data_root ./data --split_root data --dataset unc \\
        --gpu 0 --savename slatt_unc --batch_size 32 --lstm
    python train_semantic_attention_visual_grounding.py --dataset unc --lstm --test \\
        --resume saved_models/RefCOCO_semantic_attn.pth.tar --test_split val

Validates on --val_split (default val) after each epoch; --test evaluates --test_split (default testB on
unc/unc+, as the reference, test elsewhere). Multi-GPU: torchrun --nproc_per_node N <this script> <flags>.
"""
from __future__ import annotations

import argparse

from app.argparser import grounding_parsers, script_parser
from app.builders import build_corpus, build_test_model, setup_runtime
from app.checks import check_before_work
from app.pipeline import build_training_run, run_image_test, train
from utils.cli import run_main


def get_args_parser() -> argparse.ArgumentParser:
    return script_parser(__doc__, grounding_parsers(video=False))


def main(args: argparse.Namespace) -> None:
    with check_before_work(args, training=not args.test):
        run(args)


def run(args: argparse.Namespace) -> None:
    rt = setup_runtime(args, args.savename if not args.test else f"{args.savename}_test", training=not args.test)
    corpus = build_corpus(args)
    if args.test:
        run_image_test(args, rt, build_test_model(args, rt, len(corpus), "image"), corpus)
        return
    train(args, rt, build_training_run(args, rt, corpus, "image"))


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
