"""Video evaluation speed: our streaming evaluation (each frame's backbone once) vs the reference method
(every 5-frame window recomputed from images), with the real loaders, on synthvid test videos.

    python -m bench.video_eval [--videos 2] [--cfgs full small] [--batch_size 5]

Prints frames/s of both methods per configuration, the speed-up, and checks that both give the same
predictions (same hits and centre hits, and the largest box difference). Weights are random (speed does not depend on
them); the model runs in eval mode on the CPU (or CUDA if available).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from app.engine import evaluate_video, evaluate_video_windows
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import VIDDataset, collate_clip_frames
from model import DEFAULT_CFG, SMALL_CFG, build_grounding_model
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

CONFIGS = {  # name: (cfg, image size, embedding size)
    "full": (DEFAULT_CFG, 256, 512),
    "small": (SMALL_CFG, 128, 128),
}


def bench_config(name: str, root: Path, videos: int, batch_size: int, device: torch.device) -> dict:
    cfg, size, emb = CONFIGS[name]
    corpus = load_corpus(root / "VID" / "corpus.pth")
    dataset = VIDDataset(root, root, "VID", "test", corpus, image_size=size, num_frames=5)
    indices = [i for i, (v, _) in enumerate(dataset.samples) if v < videos]
    model = build_grounding_model("video", len(corpus), cfg, size, emb).to(device).eval()
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)

    def stream() -> list:
        loader = DataLoader(dataset.clip_frames(range(videos)), batch_size=batch_size, collate_fn=collate_clip_frames)
        return evaluate_video(model, loader, device, geometry, batch_size=batch_size, progress=False)

    def windows() -> list:
        loader = DataLoader(Subset(dataset, indices), batch_size=batch_size)
        return evaluate_video_windows(model, loader, device, geometry, progress=False)

    stream()  # warm-up (kernel selection)
    timings = {}
    results = {}
    for method, run in (("stream", stream), ("windows", windows)):
        start = time.perf_counter()
        results[method] = run()
        timings[method] = time.perf_counter() - start
    same_cells = all(a["centre_hit"] == b["centre_hit"] and a["hit"] == b["hit"]
                     for a, b in zip(results["stream"], results["windows"]))
    max_box_diff = max(abs(x - y) for a, b in zip(results["stream"], results["windows"])
                       for x, y in zip(a["pred"], b["pred"]))
    frames = len(indices)
    return {"config": f"{name} ({cfg.name}, {size} px, E={emb})", "frames": frames,
            "stream": frames / timings["stream"], "windows": frames / timings["windows"],
            "same": same_cells, "box_diff": max_box_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2, help="test videos evaluated per configuration")
    parser.add_argument("--cfgs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch_size", type=int, default=5, help="windows (and frames) per forward")
    parser.add_argument("--data", default=None, help="a synthvid root to use (default: generate one)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synthvid"
        if not args.data:
            generate(root, SynthConfig(train_videos=1, val_videos=1, test_videos=args.videos, min_frames=20,
                                       max_frames=20, expressions_per_video=1))
        rows = [bench_config(name, root, args.videos, args.batch_size, device) for name in args.cfgs]
    print("\n| configuration | frames | ours (stream) frames/s | reference (windows) frames/s | speed-up "
          "| same predictions |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['frames']} | {r['stream']:.2f} | {r['windows']:.2f} | "
              f"{r['stream'] / r['windows']:.2f}x | {'yes' if r['same'] else 'NO'} "
              f"(max box diff {r['box_diff']:.1e} px) |")


if __name__ == "__main__":
    main()
