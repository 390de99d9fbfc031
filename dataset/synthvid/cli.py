"""``python -m dataset.synthvid``: generate the set from the command line."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import dataset.synthvid
from dataset.synthvid.config import SynthConfig
from dataset.synthvid.hard import HardFrames
from dataset.synthvid.writer import generate
from utils.cli import ArgumentParser, Interrupted, positive_int, run_main, seed
from utils.io import UserInputError, lock_outputs


def run(args: argparse.Namespace) -> None:
    """Generate the set the parsed command line describes."""
    if len(args.frames) not in (1, 2):
        raise UserInputError(f"--frames takes MIN MAX or one N, got {args.frames}")
    config = SynthConfig(args.seed, args.train_videos, args.val_videos, args.test_videos, args.frames[0],
                         args.frames[-1], args.expressions, args.image_stride, tuple(args.type_mix),
                         args.jpeg_quality, tuple(args.eval_frames) if args.eval_frames else None,
                         HardFrames(args.motion_blur, args.motion_blur_length, args.occlusion, args.occlusion_frames,
                                    tuple(args.occlusion_cover), args.defocus, args.defocus_sigma, args.low_light,
                                    args.low_light_gain, args.low_light_noise))
    for folder in (Path(args.out), *Path(args.out).parents):  # the nearest existing one must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise UserInputError(f"--out {args.out}: {folder} is a file, not a folder")
            break
    with lock_outputs({"--out": args.out}):
        try:
            written = generate(args.out, config, force=args.force, workers=args.workers)
        except KeyboardInterrupt:
            out = Path(args.out)
            partial = out.is_dir() and any(out.iterdir())
            raise Interrupted(note=f"{out} holds part of a set and no manifest: pass --force to write it again"
                              if partial else "") from None
    print(f"synthvid: {'wrote' if written else 'already complete, nothing to do:'} {args.out}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m dataset.synthvid",
                            description=dataset.synthvid.__doc__.split("\n")[0])
    defaults = SynthConfig()
    parser.add_argument("--out", default="data/synthvid", help="output root R (default: %(default)s)")
    parser.add_argument("--seed", type=seed, default=defaults.seed)
    parser.add_argument("--train_videos", type=int, default=defaults.train_videos)
    parser.add_argument("--val_videos", type=int, default=defaults.val_videos)
    parser.add_argument("--test_videos", type=int, default=defaults.test_videos)
    parser.add_argument("--frames", type=int, nargs="+", metavar="N",
                        default=[defaults.min_frames, defaults.max_frames],
                        help="frames per clip: MIN MAX, or one fixed N (default: %(default)s)")
    parser.add_argument("--eval_frames", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="frames per val/test clip (default: as --frames)")
    parser.add_argument("--expressions", type=int, default=defaults.expressions_per_video,
                        help="expressions (= video entries) per clip, each for a different target")
    parser.add_argument("--image_stride", type=int, default=defaults.image_stride,
                        help="image-level export keeps every N-th frame (default: %(default)s)")
    parser.add_argument("--type_mix", type=float, nargs=3, default=list(defaults.type_mix),
                        metavar=("ATTRIBUTE", "LOCATION", "MOTION"))
    parser.add_argument("--jpeg_quality", type=int, default=defaults.jpeg_quality)
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                        help="processes (the output does not depend on it)")
    parser.add_argument("--force", action="store_true",
                        help="write over a non-empty --out that is not this very set (other files are kept)")
    hard = parser.add_argument_group(
        "hard frames", "the paper's hard frames, as sparse per-frame events (all off by default; with any on, "
        "VID/degradations_<split>.json labels every frame). A RATE is the probability that a frame starts an "
        "event; the frame after an event is clean")
    h = defaults.hard_frames
    hard.add_argument("--motion_blur", type=float, default=h.motion_blur, metavar="RATE",
                      help="long exposure: moving objects smeared along their own motion (default: %(default)s)")
    hard.add_argument("--motion_blur_length", type=float, default=h.motion_blur_length, metavar="L",
                      help="smear length in multiples of the object's displacement per frame (default: %(default)s)")
    hard.add_argument("--occlusion", type=float, default=h.occlusion, metavar="RATE",
                      help="a grey bar in front of every expression target for a few frames (default: %(default)s)")
    hard.add_argument("--occlusion_frames", type=int, default=h.occlusion_frames, metavar="N",
                      help="an occlusion lasts 1..N consecutive frames (default: %(default)s)")
    hard.add_argument("--occlusion_cover", type=float, nargs=2, default=list(h.occlusion_cover),
                      metavar=("MIN", "MAX"), help="fraction of the target box the bar covers (default: %(default)s)")
    hard.add_argument("--defocus", type=float, default=h.defocus, metavar="RATE",
                      help="Gaussian blur of the whole frame (default: %(default)s)")
    hard.add_argument("--defocus_sigma", type=float, default=h.defocus_sigma, metavar="PX",
                      help="its standard deviation in pixels (default: %(default)s)")
    hard.add_argument("--low_light", type=float, default=h.low_light, metavar="RATE",
                      help="a dark, noisy frame (default: %(default)s)")
    hard.add_argument("--low_light_gain", type=float, default=h.low_light_gain, metavar="G",
                      help="light scaled by G (default: %(default)s)")
    hard.add_argument("--low_light_noise", type=float, default=h.low_light_noise, metavar="STD",
                      help="extra sensor noise in grey levels (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(run, get_args_parser(), argv)
