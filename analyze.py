"""Analyse grounding predictions: a Markdown or HTML report with plots, from ``--save_pred`` files and their index.

    python analyze.py demo_output/slatt.jsonl demo_output/cgslatt.jsonl --data_root data/synthvid_demo \\
        --split_root data/synthvid_demo --dataset VID --split test --out report.md

The report (docs/analysis.md): accuracy at IoU 0.3/0.5/0.7 and mean IoU; accuracy by expression type, object size
and degradation; temporal stability; per-video IoU timelines; the worst frames drawn; and every run against the
first, paired by frame and phrase, with bootstrap intervals over videos. Images go to ``<report stem>_files/``.
Plots need matplotlib (optional, in requirements-dev.txt); without it the report has no plots.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from app.analysis import load_index_info, read_run, write_report
from app.predictions import check_writable
from dataset.names import IMAGE_DATASETS, SPLITS, VIDEO_DATASETS
from utils.cli import ArgumentParser, non_negative_int, run_main
from utils.io import UserInputError

REPORT_SUFFIXES = (".md", ".html", ".htm")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runs = parser.add_argument_group("runs")
    runs.add_argument("predictions", nargs="+", help="--save_pred JSON Lines files (the first is the baseline)")
    runs.add_argument("--names", nargs="+", default=None, help="a name per predictions file (default: file stems)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="VID", choices=(*VIDEO_DATASETS, *IMAGE_DATASETS),
                      help="the index the predictions came from: a video dataset (its video-level index, which "
                           "also matches image-level predictions of the same frames) or an image dataset")
    data.add_argument("--split", default="test", choices=SPLITS, help="split of the index")
    data.add_argument("--data_root", default="./data", help="root of the images (sizes and the gallery need them)")
    data.add_argument("--split_root", default="data", help="root of the index files: <split_root>/<dataset>/")
    data.add_argument("--degradations", default=None,
                      help="per-frame degradation labels (default <split_root>/VID/degradations_<split>.json "
                           "when it exists)")
    report = parser.add_argument_group("report")
    report.add_argument("--out", default="report.md", help="the report: .md (Markdown) or .html")
    report.add_argument("--gallery", type=non_negative_int, default=8, help="worst frames drawn per run (0: none)")
    report.add_argument("--timelines", type=non_negative_int, default=12,
                        help="video entries with an IoU timeline (lowest mean IoU first; 0: none)")
    report.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report and its folder")
    return parser


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise UserInputError(f"--out {out}: the report must end in {', '.join(REPORT_SUFFIXES)}")
    names = args.names or [Path(p).stem for p in args.predictions]
    if len(names) != len(args.predictions) or len(set(names)) != len(names):
        raise UserInputError(f"--names: one distinct name per predictions file ({len(args.predictions)}), "
                             f"got {names}")
    inputs = {Path(p).resolve() for p in args.predictions}
    if out.resolve() in inputs:
        raise UserInputError(f"--out {out} is one of the predictions files")
    check_writable(out, args.overwrite, "--out")
    check_writable(out.with_name(f"{out.stem}_files"), args.overwrite, "--out (its image folder)")
    split_root = Path(args.split_root)
    degradations = Path(args.degradations) if args.degradations else split_root / "VID" / \
        f"degradations_{args.split}.json"
    if args.degradations and not degradations.is_file():
        raise UserInputError(f"--degradations {degradations} does not exist")
    info = load_index_info(split_root, Path(args.data_root), args.dataset, args.split,
                           degradations if degradations.is_file() else None)
    runs = {name: read_run(path, info) for name, path in zip(names, args.predictions)}
    plots = importlib.util.find_spec("matplotlib") is not None
    if not plots:
        print("analyze: matplotlib is not installed, so the report has no plots "
              "(pip install matplotlib; it is in requirements-dev.txt)", file=sys.stderr)
    write_report(runs, info, dict(zip(names, args.predictions)), out, args.gallery, args.timelines, plots,
                 args.seed)
    print(f"report: {out}")


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
