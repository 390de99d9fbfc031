"""Test-set evaluation when several index entries share their frames (VID-Sentence tubes and sentences, synthvid's
3 expressions per clip): each distinct frame's backbone once per test run (``stream``, the default of the test
script) against the per-sentence streaming evaluation it replaced (each entry's frames computed again) and the
reference method (``--eval_method windows``), on the demo's synthvid test set.

    python -m bench.shared_frames [--data data/synthvid_demo] [--videos 0] [--cfgs demo full]

Prints seconds and frames/s (frames = test entries' frames, what accuracy is computed over) per method, and
checks that the three give the same predictions (hits, centre hits, largest box difference). Weights are
random (speed does not depend on them). ``--videos N`` evaluates the entries of the first N clips only.
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
from dataset.vid_loader import VIDDataset, collate_sequence_frames, group_videos
from model import DEFAULT_CFG, SMALL_CFG, build_grounding_model
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

# run_demo.py's set, with one training clip: the test clips depend only on the seed and the test parameters
DEMO_TEST = SynthConfig(seed=0, train_videos=1, val_videos=1, test_videos=60, min_frames=6, max_frames=8,
                        expressions_per_video=3, image_stride=1, eval_frames=(12, 16))
CONFIGS = {  # name: (cfg, image size, embedding size)
    "demo": (SMALL_CFG, 128, 64),
    "full": (DEFAULT_CFG, 256, 512),
}


def bench_config(name: str, root: Path, clips: int, batch_size: int, device: torch.device) -> dict:
    cfg, size, emb = CONFIGS[name]
    corpus = load_corpus(root / "VID" / "corpus.pth")
    dataset = VIDDataset(root, root, "VID", "test", corpus, image_size=size, num_frames=5)
    groups = group_videos(dataset.videos, range(len(dataset.videos)))
    videos = sorted(v for group in (groups[:clips] if clips else groups) for v in group)
    wanted = set(videos)
    indices = [i for i, (v, _) in enumerate(dataset.samples) if v in wanted]
    torch.manual_seed(0)
    model = build_grounding_model("video", len(corpus), cfg, size, emb).to(device).eval()
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)

    def stream(share: bool) -> list:
        loader = DataLoader(dataset.sequence_frames(videos, share), batch_size=batch_size,
                            collate_fn=collate_sequence_frames)
        return evaluate_video(model, loader, device, geometry, batch_size=batch_size, progress=False)

    def windows() -> list:
        loader = DataLoader(Subset(dataset, indices), batch_size=batch_size)
        return evaluate_video_windows(model, loader, device, geometry, progress=False)

    methods = {"stream, shared frames": lambda: stream(True), "stream, per sentence": lambda: stream(False),
               "windows (reference)": windows}
    stream(True)  # warm-up (kernel selection)
    timings, results = {}, {}
    for method, run in methods.items():
        start = time.perf_counter()
        results[method] = run()
        timings[method] = time.perf_counter() - start
    first = results["stream, shared frames"]
    checks = {}
    for method, records in results.items():
        same = [r["index"] for r in records] == [r["index"] for r in first] and all(
            a["hit"] == b["hit"] and a["centre_hit"] == b["centre_hit"] for a, b in zip(records, first))
        diff = max(abs(x - y) for a, b in zip(records, first) for x, y in zip(a["pred"], b["pred"]))
        checks[method] = (same, diff)
    distinct = len({dataset.videos[v][t][0] for v in videos for t in range(len(dataset.videos[v]))})
    return {"config": f"{name} ({cfg.name}, {size} px, E={emb})", "entries": len(videos), "frames": len(indices),
            "distinct": distinct, "timings": timings, "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="a synthvid root, e.g. the demo's data/synthvid_demo (default: its test split, generated)")
    parser.add_argument("--videos", type=int, nargs="+", default=[0, 2],
                        help="clips evaluated per configuration (0: all), one value per --cfgs entry")
    parser.add_argument("--cfgs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch_size", type=int, default=8, help="windows (and frames) per forward")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}  load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synthvid_demo"
        if not args.data:
            generate(root, DEMO_TEST, workers=2)
        clips = args.videos + [args.videos[-1]] * (len(args.cfgs) - len(args.videos))
        rows = [bench_config(name, root, n, args.batch_size, device) for name, n in zip(args.cfgs, clips)]
    print("\n| configuration | entries | frames (distinct) | method | seconds | frames/s | vs windows "
          "| same predictions |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reference = r["timings"]["windows (reference)"]
        for method, elapsed in r["timings"].items():
            same, diff = r["checks"][method]
            print(f"| {r['config']} | {r['entries']} | {r['frames']} ({r['distinct']}) | {method} | {elapsed:.1f} "
                  f"| {r['frames'] / elapsed:.1f} | {reference / elapsed:.2f}x | {'yes' if same else 'NO'} "
                  f"(max box diff {diff:.1e} px) |")


if __name__ == "__main__":
    main()
