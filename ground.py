"""Ground sentences in your own video, folder of frames, or images, with a CG-SL-Att (video) or SL-Att (image)
checkpoint.

    python ground.py clip.mp4 --resume saved_models/cgslatt_model_best.pth.tar \\
        --phrase "the red car on the left" --phrase "the man in black" --out_video out.mp4 --out_jsonl out.jsonl

    # the authors' released checkpoint: reference defaults plus the corpus it was trained with
    python ground.py frames/ --resume saved_models/VID_cogrounding_semantic_attn.pth.tar \\
        --corpus data/VID/corpus.pth --phrases sentences.txt --out_jsonl out.jsonl --post_process

Input: one video file (whatever FFmpeg decodes, read through PyAV: mp4, mov, avi, mkv, webm, ...), one folder of
frames (natural sort order), or image files (each grounded alone). Each frame's backbone runs once for all
sentences; the video model grounds 5-frame windows clipped at both ends as the test script does. Writes JSON
Lines (one record per frame and sentence: frame, time (s, videos), sentence, box [x1, y1, x2, y2] in original
pixels, score, top-k candidates), an annotated video (H.264 .mp4 that browsers play, utils/video.py: same frame
rate, same size padded to even sides, one colour per sentence) and a GIF; existing outputs are replaced only with
--overwrite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from app.annotate import ground_and_draw, json_record
from app.argparser import image_size, model_parser, runtime_parser, script_parser
from app.builders import build_amp_dtype, build_device, ignored_flags
from app.checks import FILE, check_output, check_suffix, claim_outputs, input_files
from app.grounder import FrameSource, Grounder, read_frames
from app.predictions import JSONL_SUFFIXES, save_gif
from dataset.names import IMAGE_DATASETS, VIDEO_DATASETS
from utils.cli import given_flags, int_from, keeps, positive_float, positive_int, run_main
from utils.geometry import anchors_for_dataset
from utils.io import UserInputError, atomic_file, read_text
from utils.progress import progress_bar
from utils.video import VIDEO_SUFFIXES, VideoWriter, output_path

DEFAULT_FPS = 25.0  # of the annotated video of a folder of frames


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__, [model_parser(from_checkpoint=True), runtime_parser()])
    parser.add_argument("inputs", nargs="+", help="a video file, a folder of frames, or image files")
    group = parser.add_argument_group("sentences")
    group.add_argument("--phrase", action="append", default=[], help="a sentence to ground (repeat for more)")
    group.add_argument("--phrases", default=None, help="a text file with one sentence per line")
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--resume", required=True, help="the checkpoint (CG-SL-Att or SL-Att; the kind is detected)")
    group.add_argument("--kind", default="auto", choices=("auto", "video", "image"),
                       help="refuse a checkpoint of the other kind (default: whatever the checkpoint holds)")
    group.add_argument("--size", type=image_size, default=None, help="input size (default: the checkpoint's, else 256)")
    group.add_argument("--dataset", default=None, choices=VIDEO_DATASETS + IMAGE_DATASETS,
                       help="anchors of this dataset (default: the checkpoint's, else the default anchors)")
    group = parser.add_argument_group("grounding")
    group.add_argument("--stride", type=positive_int, default=1,
                       help="ground every k-th frame (windows of grounded frames)")
    group.add_argument("--post_process", action="store_true",
                       help="re-score each frame's top-5 candidates over its window as post_processing.py does")
    group.add_argument("--top_k", type=int_from(1, 5), default=5, help="candidates per record in the JSON Lines (1-5)")
    group.add_argument("--batch_size", type=positive_int, default=8, help="frames and windows per forward")
    group = parser.add_argument_group("outputs")
    group.add_argument("--out_jsonl", default=None, help="JSON Lines of the boxes")
    group.add_argument("--out_video", default=None,
                       help="annotated video: .mp4 (H.264, plays in browsers), .mkv, .webm (VP9) or .avi (MJPEG)")
    group.add_argument("--out_gif", default=None, help="annotated GIF (at most --gif_frames frames, half size)")
    group.add_argument("--gif_frames", type=positive_int, default=150, help="frames in the GIF")
    group.add_argument("--fps", type=positive_float, default=None, help="frame rate of a folder's video (default 25)")
    group.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    group.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def read_sentences(args: argparse.Namespace) -> list[str]:
    sentences = [s.strip() for s in args.phrase]
    if args.phrases:
        if not Path(args.phrases).exists():
            raise UserInputError(f"--phrases {args.phrases} not found")
        text = read_text(args.phrases, "--phrases")
        sentences += [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences or not all(sentences):
        raise UserInputError("give the sentences to ground: --phrase TEXT (repeatable) or --phrases FILE, none empty")
    return sentences


def build_grounder(args: argparse.Namespace) -> Grounder:
    device = build_device(args)
    anchors = anchors_for_dataset(args.dataset) if args.dataset else None
    return Grounder.from_checkpoint(args.resume, kind=None if args.kind == "auto" else args.kind, corpus=args.corpus,
                                    cfg=args.cfg, device=device, amp_dtype=build_amp_dtype(args, device.type),
                                    batch_size=args.batch_size, size=args.size, emb_size=args.emb_size,
                                    light=args.light, anchor_imsize=args.anchor_imsize, anchors=anchors,
                                    max_query_len=args.time)


def check_outputs(args: argparse.Namespace, source: FrameSource) -> contextlib.ExitStack:
    """The outputs apart from the inputs and each other, writable, not replacing files without --overwrite;
    returns their locks."""
    if not (args.out_jsonl or args.out_video or args.out_gif):
        raise UserInputError("nothing to write: pass --out_jsonl, --out_video and/or --out_gif")
    if (args.out_video or args.out_gif) and source.kind == "images":
        raise UserInputError("--out_video / --out_gif need a video or a folder of frames, not separate images")
    if args.out_video:  # before output_path, which reads the suffix
        check_output("--out_video", Path(args.out_video), FILE)
        check_suffix("--out_video", args.out_video, VIDEO_SUFFIXES)
    video = output_path(args.out_video) if args.out_video else None  # .webm where H.264 is unavailable
    inputs = {"inputs": args.inputs, **input_files({"--resume": args.resume, "--corpus": args.corpus,
                                                    "--cfg": args.cfg, "--phrases": args.phrases})}
    outputs = {flag: (path, FILE) for flag, path in (("--out_jsonl", args.out_jsonl), ("--out_video", video),
                                                     ("--out_gif", args.out_gif))}
    return claim_outputs(inputs, outputs, args.overwrite,
                         suffixes={"--out_jsonl": JSONL_SUFFIXES, "--out_gif": (".gif",)})


def ignored_ground_flags(args: argparse.Namespace, source: FrameSource) -> list[str]:
    """One line per flag given that this run would not use (docs/behaviour.md §10)."""
    notes = ignored_flags(args)
    given = given_flags(args)
    annotate = bool(args.out_video or args.out_gif)
    if "fps" in given and source.kind == "video" and source.fps:
        notes.append(f"--fps is ignored for a video input: its outputs keep its own {source.fps:g} frames/s")
    elif "fps" in given and not annotate:
        notes.append("--fps is ignored without --out_video or --out_gif")
    if "gif_frames" in given and not args.out_gif:
        notes.append("--gif_frames is ignored without --out_gif")
    if "top_k" in given and not args.out_jsonl:
        notes.append("--top_k is ignored without --out_jsonl")
    frames = source.frame_count if source.kind == "video" else len(source.paths)
    if args.stride > 1 and source.kind == "images":
        notes.append("--stride is ignored for separate images (each one is grounded)")
    elif args.stride > 1 and frames is not None and args.stride >= frames:
        notes.append(f"--stride {args.stride} is not shorter than the input's {frames} frames: only its first frame "
                     "is grounded, and its boxes are drawn on every frame")
    return notes


def main(args: argparse.Namespace) -> None:
    sentences = read_sentences(args)
    source = read_frames(args.inputs)
    with check_outputs(args, source), keeps(kept := []):
        ground(args, sentences, source, kept)


def ground(args: argparse.Namespace, sentences: list[str], source: FrameSource, kept: list[Path]) -> None:
    """Ground ``sentences`` in ``source`` and write the outputs, adding each complete one to ``kept``."""
    grounder = build_grounder(args)
    for note in ignored_ground_flags(args, source):
        print(f"warning: {note}", file=sys.stderr)
    for sentence in sentences:
        grounder.encode(sentence)  # a sentence with no known word is an error, before any warning
    for sentence in sentences:
        dropped = grounder.dropped_tokens(sentence)
        if dropped:
            print(f"warning: sentence {sentence!r}: its last {dropped} token(s) are past --time "
                  f"{grounder.max_query_len} and are not read", file=sys.stderr)
        unknown = grounder.unknown_words(sentence)
        if unknown:
            print(f"warning: sentence {sentence!r}: {', '.join(unknown)} not in the vocabulary (read as <unk>)",
                  file=sys.stderr)
    fps = source.fps or args.fps or DEFAULT_FPS
    gif: list = []
    total = source.frame_count if source.kind == "video" else len(source.paths)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_file(args.out_jsonl, "w")) if args.out_jsonl else None
        bar = stack.enter_context(progress_bar(total=None if total is None else -(-total // args.stride),
                                               unit="frame", desc="grounded", enabled=not args.no_progress))
        video = stack.enter_context(VideoWriter(args.out_video, fps)) if args.out_video else None

        def on_frame(img: np.ndarray) -> None:
            if video is not None:
                video.write(img)
            if args.out_gif and len(gif) < args.gif_frames:
                gif.append(img[::2, ::2])

        for predictions in ground_and_draw(grounder, source, sentences, on_frame if video or args.out_gif else None,
                                       stride=args.stride, top_k=args.top_k, post_process=args.post_process):
            if out is not None:
                out.writelines(json.dumps(json_record(p, source, fps), allow_nan=False) + "\n" for p in predictions)
            bar.update()  # frames/s of grounded frames, all sentences
    kept += [Path(p) for p in (args.out_jsonl, video and video.path) if p]
    if args.out_gif:
        kept.append(save_gif(gif, args.out_gif, fps))
    written = [str(p) for p in (args.out_jsonl, video and video.path, args.out_gif) if p]
    print(f"grounded {len(sentences)} sentence(s) with the {grounder.kind} model; wrote {', '.join(written)}")


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
