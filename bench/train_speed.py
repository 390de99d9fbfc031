"""Training speed: iterations/s and frames/s of the real training step (loader, model, targets, losses,
RMSprop) for the video model (pairs) and the image model, on a generated synthvid set.

    python -m bench.train_speed [--iters 10] [--cfgs full small]

Prints a table; the first iterations (kernel selection) are not timed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from app.engine import train_one_epoch
from dataset.referit_loader import ReferDataset
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import VIDDataset
from model import DEFAULT_CFG, SMALL_CFG, build_grounding_model
from model.losses import GroundingCriterion
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

CONFIGS = {  # name: (cfg, image size, embedding size, batch size)
    "full": (DEFAULT_CFG, 256, 512, 4),
    "small": (SMALL_CFG, 128, 128, 16),
}
WARMUP = 2


def bench(kind: str, name: str, root: Path, iters: int, device: torch.device) -> dict:
    cfg, size, emb, batch = CONFIGS[name]
    corpus = load_corpus(root / "VID" / "corpus.pth")
    if kind == "video":
        dataset = VIDDataset(root, root, "VID", "train", corpus, image_size=size, num_frames=2, augment=True)
    else:
        dataset = ReferDataset(root, root, "synthvid", "train", corpus, image_size=size, augment=True)
    model = build_grounding_model(kind, len(corpus), cfg, size, emb).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, weight_decay=5e-4)
    criterion = GroundingCriterion()
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)

    def run(steps: int) -> float:
        loader = DataLoader(Subset(dataset, range(steps * batch)), batch_size=batch, shuffle=False)
        start = time.perf_counter()
        train_one_epoch(model, criterion, loader, optimizer, device, 0, geometry, progress=False)
        return time.perf_counter() - start

    run(WARMUP)
    seconds = run(iters)
    frames_per_sample = 2 if kind == "video" else 1
    return {"model": f"{kind} ({cfg.name}, {size} px, E={emb})", "batch": batch,
            "it_s": iters / seconds, "frames_s": iters * batch * frames_per_sample / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per configuration")
    parser.add_argument("--cfgs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthvid"
        generate(root, SynthConfig(train_videos=12, val_videos=1, test_videos=1, expressions_per_video=1,
                                   image_stride=1))
        rows = [bench(kind, name, root, args.iters, device) for name in args.cfgs for kind in ("video", "image")]
    print("\n| model | batch (samples) | iterations/s | frames/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['it_s']:.2f} | {r['frames_s']:.1f} |")


if __name__ == "__main__":
    main()
