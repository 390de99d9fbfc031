"""A local web page to ground sentences in your own clips: upload a video (or pick an example), type sentences,
watch the boxed video, the per-frame scores and the boxes, download them as JSON Lines.

    python web_demo.py --resume demo_output/saved_models/cgslatt_model_best.pth.tar   # then open the printed URL

Without --resume it uses the checkpoint `python run_demo.py` trains. The page binds 127.0.0.1 (this machine
only) unless --host says otherwise. Needs the optional requirements: pip install -r requirements-web.txt.
See docs/web_demo.md.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import torch
import uvicorn

from app.argparser import script_parser
from app.builders import build_amp_dtype, build_device
from app.grounder import Grounder
from app.web import JobQueue, create_app, load_examples
from utils.cli import gpu_ids, int_from, positive_float, positive_int, run_main
from utils.io import UserInputError

DEMO_CHECKPOINT = Path("demo_output/saved_models/cgslatt_model_best.pth.tar")  # what run_demo.py trains
DEMO_DATA = Path("data/synthvid_demo")  # run_demo.py's synthetic set: its test clips are the examples


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__, [])
    group = parser.add_argument_group("model")
    group.add_argument("--resume", default=None,
                       help=f"the checkpoint, CG-SL-Att or SL-Att (default: run_demo.py's, {DEMO_CHECKPOINT})")
    group.add_argument("--corpus", default=None, help="vocabulary file (needed for the authors' checkpoints)")
    group.add_argument("--gpu", default=None, type=gpu_ids,
                       help="CUDA device ids, e.g. '0' (sets CUDA_VISIBLE_DEVICES; the first is used); default: the "
                            "first GPU if there is one")
    group.add_argument("--batch_size", type=positive_int, default=8, help="frames and windows per forward")
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 opens it to the network)")
    group.add_argument("--port", type=int_from(1, 65535), default=8000, help="port")
    group.add_argument("--examples", default=str(DEMO_DATA),
                       help="a VID-format synthetic set whose first test clips are offered as examples")
    group.add_argument("--max_upload_mb", type=positive_float, default=100.0, help="largest clip accepted (MB)")
    group.add_argument("--max_frames", type=positive_int, default=1000, help="longest clip grounded (frames)")
    group.add_argument("--max_queue", type=positive_int, default=8, help="jobs waiting or running at most")
    group.add_argument("--keep_minutes", type=positive_float, default=30.0,
                       help="how long a finished job's video and boxes stay available")
    return parser


def build_grounder(args: argparse.Namespace) -> tuple[Grounder, torch.dtype | None]:
    """The model, and the autocast dtype its page offers (bf16 on the CPU, fp16 on CUDA)."""
    resume = Path(args.resume) if args.resume else DEMO_CHECKPOINT
    if args.resume is None and not resume.is_file():
        raise UserInputError(f"no checkpoint at {resume}: run `python run_demo.py` to train one, or pass --resume")
    device = build_device(args)
    amp_dtype = build_amp_dtype(argparse.Namespace(amp=True, amp_dtype=None), device.type)
    grounder = Grounder.from_checkpoint(resume, corpus=args.corpus, device=device, batch_size=args.batch_size)
    return grounder, amp_dtype


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    grounder, amp_dtype = build_grounder(args)
    examples = load_examples(Path(args.examples))
    if not examples:
        print(f"no example clips ({args.examples} has no synthetic test set: `python run_demo.py` writes one)")
    work = Path(tempfile.mkdtemp(prefix="cgslatt-web-"))  # uploads and outputs; removed at exit
    jobs = JobQueue(grounder, work, examples, amp_dtype, args.max_upload_mb, args.max_frames, args.max_queue,
                    args.keep_minutes * 60)
    app = create_app(jobs, Path(args.resume or DEMO_CHECKPOINT).name)
    print(f"web demo: http://{args.host}:{args.port}/  ({grounder.kind} model, {len(grounder.corpus)} words, "
          f"{grounder.device}; Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(run_main(main, get_args_parser()))
