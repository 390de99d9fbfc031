"""Training speed: iterations/s and frames/s of the real training step (loader, model, targets, losses,
RMSprop) for the video model (pairs) and the image model, on a generated synthvid set.

    python -m bench.train_speed [--iters 10] [--cfgs full small] [--kinds video image] [--amp]

Prints a table; the first iterations (kernel selection) are not timed.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from app.engine import train_one_epoch
from dataset.referit_loader import ReferDataset
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import VIDDataset
from model import DEFAULT_CFG, SMALL_CFG, TINY_CFG, build_grounding_model
from model.losses import GroundingCriterion
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

CONFIGS = {  # name: (cfg, image size, embedding size, batch size, backbone frozen)
    "full": (DEFAULT_CFG, 256, 512, 4, False),
    "small": (SMALL_CFG, 128, 128, 16, False),
    "demo-random": (SMALL_CFG, 128, 64, 16, False),  # run_demo.py's two recipes
    "demo-pretrained": (TINY_CFG, 128, 64, 16, True),
}
WARMUP = 2


def bench(kind: str, name: str, root: Path, iters: int, device: torch.device,
          amp_dtype: torch.dtype | None = None) -> dict:
    """Iterations/s, frames/s and peak memory (MB: CUDA allocations, or the process's peak RSS on the CPU)."""
    cfg, size, emb, batch, frozen = CONFIGS[name]
    corpus = load_corpus(root / "VID" / "corpus.pth")
    if kind == "video":
        dataset = VIDDataset(root, root, "VID", "train", corpus, image_size=size, num_frames=2, augment=True)
    else:
        dataset = ReferDataset(root, root, "synthvid", "train", corpus, image_size=size, augment=True)
    model = build_grounding_model(kind, len(corpus), cfg, size, emb).to(device)
    if frozen:
        model.visumodel.freeze()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.RMSprop(trained, lr=1e-4, weight_decay=5e-4)
    criterion = GroundingCriterion()
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)

    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def run(steps: int) -> float:
        loader = DataLoader(Subset(dataset, range(steps * batch)), batch_size=batch, shuffle=False)
        start = time.perf_counter()
        train_one_epoch(model, criterion, loader, optimizer, device, 0, geometry, scaler=scaler, amp_dtype=amp_dtype,
                        progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(WARMUP)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = run(iters)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    frames_per_sample = 2 if kind == "video" else 1
    return {"model": f"{kind} ({cfg.name}{', frozen' if frozen else ''}, {size} px, E={emb})", "batch": batch,
            "peak_mb": peak, "it_s": iters / seconds, "frames_s": iters * batch * frames_per_sample / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per configuration")
    parser.add_argument("--cfgs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--kinds", nargs="+", default=["video", "image"], choices=("video", "image"))
    parser.add_argument("--amp", action="store_true", help="mixed precision: bf16 on the CPU, fp16 on CUDA")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
    print(f"device: {device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthvid"
        generate(root, SynthConfig(train_videos=12, val_videos=1, test_videos=1, expressions_per_video=1,
                                   image_stride=1))
        rows = [bench(kind, name, root, args.iters, device, amp_dtype) for name in args.cfgs for kind in args.kinds]
    precision = f"amp ({amp_dtype})" if amp_dtype else "float32"
    print("\n| model | precision | batch (samples) | iterations/s | frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {precision} | {r['batch']} | {r['it_s']:.2f} | {r['frames_s']:.1f} |")


if __name__ == "__main__":
    main()
