"""One-shot GPU check: the CUDA-marked tests, a few training iterations of both models and video evaluation
(streaming and windows), each in float32 and AMP, a 1-process torchrun training run, then one table with
frames/s, peak memory and how the GPU's boxes agree with the CPU's.

    bash bench/gpu_check.sh             # on a CUDA machine (under 8 minutes on one GPU)
    bash bench/gpu_check.sh --cpu       # every step on the CPU with the small model: tests the script itself

The GPU runs the full model (yolov3.cfg, 256 px, E=512); ``--cpu`` the small one. Box agreement compares
each GPU evaluation with the CPU's float32 streaming evaluation of the same frames and weights.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import train_speed, video_eval
from dataset.synthvid import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
TRAIN_ITERS = {"cuda": 10, "cpu": 2}
EVAL_VIDEOS = {"cuda": 2, "cpu": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_step(name: str, command: list[str], cwd: Path) -> dict:
    """A subprocess step of the check: its result line and seconds (its output is shown only on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"--- {name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"step": name, "precision": "", "fps": None, "peak_mb": None,
            "result": f"{'ok' if proc.returncode == 0 else 'FAILED'}: {last} ({seconds:.0f} s)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: the same steps on the CPU with the small model (a dry run of the script)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: CUDA is not available (torch.cuda.is_available() is False); "
                 "use --cpu for a dry run of the script on the CPU")
    device = torch.device(args.device)
    cfg = "full" if device.type == "cuda" else "small"
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}  torch {torch.__version__}  model: {cfg}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows.append(run_step("CUDA-marked tests (pytest -m cuda)",
                             [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], REPO))
        root = tmp / "synthvid"
        generate(root, SynthConfig(train_videos=12, val_videos=1, test_videos=EVAL_VIDEOS[args.device],
                                   min_frames=20, max_frames=20, expressions_per_video=1, image_stride=1))
        for kind in ("video", "image"):
            for dtype in (None, amp_dtype):
                r = train_speed.bench(kind, cfg, root, TRAIN_ITERS[args.device], device, dtype)
                rows.append({"step": f"train {r['model']}, batch {r['batch']}", "precision": _precision(dtype),
                             "fps": r["frames_s"], "peak_mb": r["peak_mb"], "result": f"{r['it_s']:.2f} it/s"})
        videos = EVAL_VIDEOS[args.device]
        cpu = video_eval.run_method(cfg, "stream", root, videos, 5, "cpu")
        for method in video_eval.METHODS:
            r = video_eval.run_method(cfg, method, root, videos, 5, args.device)
            moved, diff, hits = video_eval.compare(cpu, r)
            rows.append({"step": f"evaluate {method.removesuffix('-amp')} ({r['frames']} frames)",
                         "precision": _precision(amp_dtype if method.endswith("-amp") else None),
                         "fps": r["frames"] / r["seconds"], "peak_mb": r["peak_mb"],
                         "result": f"vs CPU fp32: {moved}/{len(r['pred'])} boxes moved > {video_eval.MOVED_PX:g} px "
                                   f"(max {diff:.1e} px), {hits} hits differ"})
        small = ["--cfg", str(REPO / "model" / "yolov3_small.cfg"), "--size", "128", "--emb_size", "64",
                 "--anchor_imsize", "256"]
        rows.append(run_step("torchrun, 1 process, 1 epoch (small model)", [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(_free_port()),
            str(REPO / "train_semantic_attention_cogrounding.py"), "--data_root", str(root), "--split_root",
            str(root), "--dataset", "VID", "--lstm", *small, "--batch_size", "8", "--nb_epoch", "1",
            "--workers", "2", "--no_progress", "--savename", "gpu_check", "--save_dir", str(tmp / "saved"),
            "--log_dir", str(tmp / "logs")], tmp))
    print(f"\n| step | precision | frames/s | {'max GPU memory' if device.type == 'cuda' else 'max RSS'} (MB) "
          "| result |")
    print("|---|---|---|---|---|")
    for r in rows:
        fps = "" if r["fps"] is None else f"{r['fps']:.1f}"
        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        print(f"| {r['step']} | {r['precision']} | {fps} | {peak} | {r['result']} |")
    if any("FAILED" in r["result"] for r in rows):
        sys.exit(1)


def _precision(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else f"amp {str(dtype).removeprefix('torch.')}"


if __name__ == "__main__":
    main()
