"""Where the time goes: ``torch.profiler`` tables of streaming video evaluation, the reference window method
and one training step, on a synthvid set.

    python -m bench.profile [--cfg full] [--what stream windows train] [--frames 10] [--top 12]

Prints, per workload, the operators with the largest self CPU time (the CUDA time too on a GPU), after one
untimed warm-up run. Weights are random: time does not depend on them.
"""
from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Subset

from app.engine import evaluate_video, evaluate_video_windows, train_one_epoch
from bench.video_eval import CONFIGS
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import VIDDataset, collate_sequence_frames
from model import build_grounding_model
from model.losses import GroundingCriterion
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import load_corpus

TRAIN_BATCH = 4
WORKLOADS = ("stream", "windows", "train")


def workloads(name: str, root: Path, frames: int, device: torch.device, amp_dtype: torch.dtype | None
              ) -> dict[str, Callable[[], object]]:
    """The three workloads of configuration ``name``, each a no-argument callable."""
    cfg, size, emb = CONFIGS[name]
    corpus = load_corpus(root / "VID" / "corpus.pth")
    test = VIDDataset(root, root, "VID", "test", corpus, image_size=size, num_frames=5)
    train_set = VIDDataset(root, root, "VID", "train", corpus, image_size=size, num_frames=2, augment=True)
    model = build_grounding_model("video", len(corpus), cfg, size, emb).to(device)
    geometry = Geometry(size, DEFAULT_ANCHORS, 416)
    indices = list(range(frames))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, weight_decay=5e-4)
    criterion = GroundingCriterion()

    def stream() -> object:
        loader = DataLoader(test.sequence_frames([0]), batch_size=5, collate_fn=collate_sequence_frames)
        return evaluate_video(model, loader, device, geometry, batch_size=5, amp_dtype=amp_dtype, progress=False)

    def windows() -> object:
        loader = DataLoader(Subset(test, indices), batch_size=1)
        return evaluate_video_windows(model, loader, device, geometry, amp_dtype, progress=False)

    def train() -> object:
        loader = DataLoader(Subset(train_set, range(TRAIN_BATCH)), batch_size=TRAIN_BATCH)
        return train_one_epoch(model, criterion, loader, optimizer, device, 0, geometry, amp_dtype=amp_dtype,
                               progress=False)

    return {"stream": stream, "windows": windows, "train": train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="full", choices=list(CONFIGS))
    parser.add_argument("--what", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--frames", type=int, default=10, help="test frames evaluated per evaluation workload")
    parser.add_argument("--top", type=int, default=12, help="operators listed per workload")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on the CPU, fp16 on CUDA")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthvid"
        generate(root, SynthConfig(train_videos=2, val_videos=1, test_videos=1, min_frames=args.frames,
                                   max_frames=args.frames, expressions_per_video=1, image_stride=1))
        runs = workloads(args.cfg, root, args.frames, device, amp_dtype)
        for what in args.what:
            runs[what]()  # warm-up
            with profile(activities=activities) as prof:
                runs[what]()
            print(f"\n== {what} ({args.cfg} cfg, {device}, {'amp' if args.amp else 'fp32'})")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
