"""Video evaluation speed and memory: our streaming evaluation (each frame's backbone once) against the
reference method (every 5-frame window recomputed from its images, one window per forward as the reference's
test loop), with the real loaders, on synthvid test videos.

    python -m bench.video_eval [--videos 2] [--cfgs full small] [--methods stream windows stream-amp] [--repeats 3]

Every run is a fresh process (so its peak RSS is its own), the methods alternate within each repeat, and the
table gives the median frames/s with the range over the repeats, the peak RSS, the speed-up over the windows
method and how many predicted boxes differ from the float32 windows method (and by how much). Weights are
random but identical in every run (speed does not depend on them); CUDA is used when available.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from app.engine import evaluate_video, evaluate_video_windows
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import VIDDataset, collate_sequence_frames
from model import DEFAULT_CFG, SMALL_CFG, build_grounding_model
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

CONFIGS = {  # name: (cfg, image size, embedding size)
    "full": (DEFAULT_CFG, 256, 512),
    "small": (SMALL_CFG, 128, 128),
}
METHODS = ("stream", "windows", "stream-amp", "windows-amp")
MOVED_PX = 1.0  # a box "moved" when a coordinate differs from the float32 windows method by more than this


def run_method(name: str, method: str, root: Path, videos: int, batch_size: int, device: str) -> dict:
    """One timed evaluation in this process: predicted boxes, hits, seconds and peak RSS (MB)."""
    cfg, size, emb = CONFIGS[name]
    device_ = torch.device(device)
    corpus = load_corpus(root / "VID" / "corpus.pth")
    dataset = VIDDataset(root, root, "VID", "test", corpus, image_size=size, num_frames=5)
    indices = [i for i, (v, _) in enumerate(dataset.samples) if v < videos]
    torch.manual_seed(0)
    model = build_grounding_model("video", len(corpus), cfg, size, emb).to(device_).eval()
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)
    amp_dtype = (torch.float16 if device_.type == "cuda" else torch.bfloat16) if method.endswith("-amp") else None

    def evaluate(clips: range) -> list:
        if method.startswith("stream"):
            loader = DataLoader(dataset.sequence_frames(clips), batch_size=batch_size,
                                collate_fn=collate_sequence_frames)
            return evaluate_video(model, loader, device_, geometry, batch_size=batch_size, amp_dtype=amp_dtype,
                                  progress=False)
        subset = [i for i, (v, _) in enumerate(dataset.samples) if v in clips]
        loader = DataLoader(Subset(dataset, subset), batch_size=batch_size)
        return evaluate_video_windows(model, loader, device_, geometry, amp_dtype, progress=False)

    evaluate(range(1))  # warm-up (kernel selection), one video
    if device_.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    records = evaluate(range(videos))
    if device_.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device_.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"pred": [r["pred"] for r in records], "hit": [r["hit"] for r in records], "seconds": seconds,
            "frames": len(indices), "peak_mb": peak}


def compare(ref: dict, other: dict) -> tuple[int, float, int]:
    """(boxes moved by more than MOVED_PX, largest coordinate difference, hits that differ) of two runs."""
    diffs = [max(abs(x - y) for x, y in zip(a, b)) for a, b in zip(ref["pred"], other["pred"])]
    return (sum(d > MOVED_PX for d in diffs), max(diffs, default=0.0),
            sum(a != b for a, b in zip(ref["hit"], other["hit"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2, help="test videos (20 frames each) per configuration")
    parser.add_argument("--cfgs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=["stream", "windows", "stream-amp"], choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method, alternating the methods")
    parser.add_argument("--batch_size", type=int, default=5, help="windows (and frames) per forward of the stream")
    parser.add_argument("--data", default=None, help="a synthvid root to use (default: generate one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    methods = list(dict.fromkeys(["windows", *args.methods]))  # the float32 windows run is the baseline
    print(f"device: {args.device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synthvid"
        if not args.data:
            generate(root, SynthConfig(train_videos=1, val_videos=1, test_videos=args.videos, min_frames=20,
                                       max_frames=20, expressions_per_video=1))
        spawn = multiprocessing.get_context("spawn")
        for name in args.cfgs:
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            for _ in range(args.repeats):
                for method in methods:
                    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        runs[method].append(pool.submit(run_method, name, method, root, args.videos,
                                                        args.batch_size, args.device).result())
            base = statistics.median(r["frames"] / r["seconds"] for r in runs["windows"])
            for method in methods:
                fps = [r["frames"] / r["seconds"] for r in runs[method]]
                moved, diff, hits = compare(runs["windows"][0], runs[method][0])
                rows.append((name, method, runs[method][0]["frames"], statistics.median(fps), min(fps), max(fps),
                             max(r["peak_mb"] for r in runs[method]), statistics.median(fps) / base,
                             moved, diff, hits))
    memory = "max GPU memory (MB)" if args.device == "cuda" else "max RSS (MB)"
    print(f"\n| configuration | method | frames | frames/s (median, range of {args.repeats}) | {memory} | "
          "vs windows | boxes vs windows fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name, method, frames, fps, low, high, peak, ratio, moved, diff, hits in rows:
        cfg, size, emb = CONFIGS[name]
        print(f"| {name} ({cfg.name}, {size} px, E={emb}) | {method} | {frames} | {fps:.2f} ({low:.2f}-{high:.2f}) "
              f"| {peak:.0f} | {ratio:.2f}x | {moved} moved > {MOVED_PX:g} px (max {diff:.1e} px), "
              f"{hits} hits differ |")


if __name__ == "__main__":
    main()
