"""The whole pipeline, offline, in one command: synthetic videos -> SL-Att -> CG-SL-Att -> 5-frame window
evaluation -> cache -> post-processing -> a results table and an animated GIF.

    python run_demo.py                     # about 11 minutes on 2 CPU cores; uses a GPU when there is one

Every step runs the project's own command line (printed as it runs), so the demo exercises exactly what a user
types: `python -m dataset.synthvid` writes a synthetic set in the VID-Sentence format (plus its image-level
export), `train_semantic_attention_visual_grounding.py` trains the image model SL-Att,
`train_semantic_attention_cogrounding.py --pretrain` trains CG-SL-Att from it, `test_semantic_attention_cogrounding.py
--cache` evaluates it with 5-frame windows and writes the cache, `post_processing.py` re-scores the cache, and
the image model is evaluated on the same test frames; finally `ground.py` grounds two sentences in one test
clip rendered to an MP4, writing the annotated MP4 and its JSON Lines. The backbone is the small cfg trained
from scratch (no pretrained weights can be downloaded here), at 128 px; see README.md for what the numbers mean.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from app.predictions import draw_record, read_predictions
from dataset.common import load_index
from dataset.synthvid import SynthConfig, generate
from dataset.vid_loader import video_index_path
from utils.box_ops import box_iou
from utils.io import UserInputError, atomic_write_text
from utils.video import write_video

ROOT = Path(__file__).resolve().parent
TYPES = ("attribute", "location", "motion")
# many short training clips (scene variety matters more than clip length), longer test clips; every frame in
# the image-level export so that SL-Att is evaluated on exactly the frames CG-SL-Att is
DATA = SynthConfig(seed=0, train_videos=800, val_videos=16, test_videos=60, min_frames=6, max_frames=8,
                   expressions_per_video=3, image_stride=1, eval_frames=(12, 16))
QUICK_DATA = SynthConfig(seed=0, train_videos=12, val_videos=2, test_videos=3, min_frames=4, max_frames=5,
                         expressions_per_video=2, image_stride=1, eval_frames=(6, 8))
MODEL = ["--lstm", "--cfg", str(ROOT / "model" / "yolov3_small.cfg"), "--size", "128", "--emb_size", "64",
         "--anchor_imsize", "256"]
# from scratch, so AdamW at one learning rate for all parts, per-iteration poly decay after a short warm-up; the
# image model converges faster without augmentation, the video model (initialised from it) generalises better with
TRAIN = ["--optimizer", "adamw", "--lr", "2e-3", "--weight_decay", "1e-4", "--backbone_lr_scale", "1",
         "--lr_per_iter", "--warmup_iters", "50", "--darknet_weights", "", "--workers", "0", "--print_freq", "500"]
IMAGE_EPOCHS, IMAGE_BATCH, IMAGE_TRAIN = 2, 16, ["--no_augment"]  # about 2100 iterations
VIDEO_EPOCHS, VIDEO_BATCH, VIDEO_TRAIN = 2, 8, []  # about 4200 iterations


def run(step: str, script: str, args: list[str], timings: dict[str, float]) -> None:
    """Run one of the project's commands, show it, time it, and stop the demo if it fails."""
    command = [sys.executable, str(ROOT / script), *args]
    print(f"\n=== {step}\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(f"run_demo: step '{step}' failed (command above)")
    timings[step] = time.perf_counter() - start


def stability(records: list[dict[str, Any]]) -> float:
    """Fraction of consecutive frames (same video entry) whose predicted boxes overlap with IoU > 0.5."""
    by_video = defaultdict(list)
    for r in records:
        by_video[r["video"]].append(r)
    pairs = [(a["pred"], b["pred"]) for frames in by_video.values() for a, b in zip(frames, frames[1:])]
    if not pairs:
        return float("nan")
    first, second = (torch.tensor([p[i] for p in pairs]) for i in (0, 1))
    return float((box_iou(first, second) > 0.5).float().mean())


def row(name: str, records: list[dict[str, Any]], types: list[list[str]]) -> dict[str, Any]:
    hits = [r["iou"] > 0.5 for r in records]
    out = {"method": name, "accuracy": float(np.mean(hits)), "miou": float(np.mean([r["iou"] for r in records])),
           "stability": stability(records), "count": len(records)}
    for t in TYPES:
        chosen = [h for h, ts in zip(hits, types) if t in ts]
        out[t] = float(np.mean(chosen)) if chosen else float("nan")
    return out


def table(rows: list[dict[str, Any]], timings: dict[str, float], total: float) -> str:
    lines = ["| method | accuracy | mean IoU | attribute | location | motion | temporal stability |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['accuracy']:.3f} | {r['miou']:.3f} | {r['attribute']:.3f} | "
                     f"{r['location']:.3f} | {r['motion']:.3f} | {r['stability']:.3f} |")
    lines.append("")
    lines.append(f"{rows[0]['count']} test frames; expression types overlap (an expression can use several); "
                 "temporal stability = fraction of consecutive frames whose predicted boxes have IoU > 0.5.")
    lines.append("")
    lines.append("| step | wall time (s) |")
    lines.append("|---|---|")
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    lines.append(f"| total | {total:.0f} |")
    return "\n".join(lines)


def save_gif(records_by_method: dict[str, list[dict[str, Any]]], data: Path, path: Path, videos: int = 4) -> None:
    """An animated GIF of a few test videos: one panel per method, prediction red, ground truth green."""
    first = next(iter(records_by_method.values()))
    chosen = sorted({r["video"] for r in first})[:: max(1, len({r["video"] for r in first}) // videos)][:videos]
    frames = []
    for video in chosen:
        per_method = {m: [r for r in recs if r["video"] == video] for m, recs in records_by_method.items()}
        for t in range(len(per_method[next(iter(per_method))])):
            panels = []
            for method, recs in per_method.items():
                img = cv2.imread(str(data / recs[t]["image"]), cv2.IMREAD_COLOR)
                img = cv2.resize(draw_record(img, recs[t]), (256, 224))
                cv2.putText(img, method, (3, 218), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
                panels.append(img)
            frames.append(Image.fromarray(cv2.cvtColor(np.hstack(panels), cv2.COLOR_BGR2RGB)))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=250, loop=0)


def render_test_clip(data: Path, path: Path, fps: float = 10.0) -> tuple[Path, list[str]]:
    """The first test clip of the synthetic set as an H.264 MP4 (as a user would bring one), and two of its
    sentences."""
    videos = load_index(video_index_path(data, "VID", "test"), "test")
    frames = [path for path, _, _ in videos[0]]
    phrases = [video[0][2] for video in videos if [p for p, _, _ in video] == frames][:2]
    path = write_video(path, [cv2.imread(str(data / frame), cv2.IMREAD_COLOR) for frame in frames], fps)
    return path, phrases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for checkpoints, predictions, cache, GIF")
    parser.add_argument("--data", default=None,
                        help="where the synthetic set is, generated if missing (default data/synthvid_demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo run")
    parser.add_argument("--quick", action="store_true",
                        help="a one-minute smoke run on a tiny set and one epoch each (the numbers mean nothing)")
    args = parser.parse_args()
    config, image_epochs, video_epochs = (QUICK_DATA, 1, 1) if args.quick else (DATA, IMAGE_EPOCHS, VIDEO_EPOCHS)
    out = Path(args.out).resolve()
    data = Path(args.data or ("data/synthvid_demo_quick" if args.quick else "data/synthvid_demo")).resolve()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"run_demo: {out} is not empty; pass --overwrite to replace it, or choose --out")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    print(f"=== synthetic data: {data}", flush=True)
    try:
        generate(data, config, workers=2)
    except UserInputError as err:
        raise SystemExit(f"run_demo: {err}") from err
    timings["generate synthvid"] = time.perf_counter() - start

    common = ["--data_root", str(data), "--split_root", str(data), *MODEL, "--save_dir", str(out / "saved_models"),
              "--log_dir", str(out / "logs"), "--overwrite"]
    slatt = out / "saved_models" / "slatt_model_best.pth.tar"
    cgslatt = out / "saved_models" / "cgslatt_model_best.pth.tar"
    run("train SL-Att (image model)", "train_semantic_attention_visual_grounding.py",
        [*common, "--dataset", "synthvid", "--savename", "slatt", "--nb_epoch", str(image_epochs),
         "--batch_size", str(IMAGE_BATCH), *TRAIN, *IMAGE_TRAIN], timings)
    run("train CG-SL-Att from SL-Att", "train_semantic_attention_cogrounding.py",
        [*common, "--dataset", "VID", "--savename", "cgslatt", "--nb_epoch", str(video_epochs),
         "--batch_size", str(VIDEO_BATCH), "--pretrain", str(slatt), "--val_split", "val", *TRAIN, *VIDEO_TRAIN],
        timings)
    run("evaluate CG-SL-Att (5-frame windows) + cache", "test_semantic_attention_cogrounding.py",
        [*common, "--dataset", "VID", "--savename", "cgslatt", "--test", "--resume", str(cgslatt), "--workers", "0",
         "--cache", "--cache_dir", str(out / "cache"), "--save_pred", str(out / "cgslatt.jsonl"), "--batch_size", "16"],
        timings)
    run("post-process the cache", "post_processing.py",
        ["--data_root", str(data), "--split_root", str(data), "--dataset", "VID", "--lstm", "--test", "--size", "128",
         "--cache_dir", str(out / "cache"), "--save_pred", str(out / "cgslatt_pp.jsonl"), "--log_dir",
         str(out / "logs"), "--overwrite"], timings)
    run("evaluate SL-Att per frame", "train_semantic_attention_visual_grounding.py",
        [*common, "--dataset", "synthvid", "--savename", "slatt", "--test", "--resume", str(slatt),
         "--test_split", "test", "--workers", "0", "--save_pred", str(out / "slatt.jsonl"), "--batch_size", "32"],
        timings)
    clip, phrases = render_test_clip(data, out / "clip.mp4")
    run("ground two sentences in an MP4 (ground.py)", "ground.py",
        [str(clip), "--resume", str(cgslatt), *[f for p in phrases for f in ("--phrase", p)], "--post_process",
         "--out_video", str(out / "grounded.mp4"), "--out_jsonl", str(out / "grounded.jsonl"), "--overwrite",
         "--batch_size", "16"], timings)
    total = time.perf_counter() - start

    expressions = json.loads((data / "VID" / "expressions_test.json").read_text())
    video_of = {}  # (frame image, phrase) -> video entry index, to put the image model's records on the videos
    videos = load_index(video_index_path(data, "VID", "test"), "test")
    for v, video in enumerate(videos):
        for path, _, phrase in video:
            video_of[(path, phrase.lower())] = v
    records = {"CG-SL-Att": read_predictions(out / "cgslatt.jsonl"),
               "CG-SL-Att + post-processing": read_predictions(out / "cgslatt_pp.jsonl"),
               "SL-Att (per frame)": read_predictions(out / "slatt.jsonl")}
    for recs in records.values():
        for r in recs:
            r["video"] = video_of[(r["image"], r["phrase"])]
    types = {m: [expressions[r["video"]]["types"] for r in recs] for m, recs in records.items()}
    rows = [row(m, records[m], types[m])
            for m in ("SL-Att (per frame)", "CG-SL-Att", "CG-SL-Att + post-processing")]
    text = table(rows, timings, total)
    atomic_write_text(text + "\n", out / "results.md")
    save_gif(records, data, out / "demo.gif")
    print("\n" + text)
    print(f"\nresults: {out / 'results.md'}   animation: {out / 'demo.gif'}   predictions: {out}/*.jsonl   "
          f"grounded MP4: {out / 'grounded.mp4'} ({out / 'grounded.jsonl'})")


if __name__ == "__main__":
    main()
