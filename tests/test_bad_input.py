"""Bad input, as a new user gives it, across the four scripts, post_processing.py and the tools.

Each case either exits 2 with one line on stderr, ``error: ...``, naming the file, flag or key and what was
expected, or completes (exit 0) with its documented number of ``warning:`` lines (docs/behaviour.md §10).
The scripts' ``main`` runs in-process through ``run_main`` (the command line's code path minus interpreter
start-up); most cases stop at parse or validation time, before any model is built.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

import ground
import post_processing
import test_semantic_attention_cogrounding as test_video
import train_semantic_attention_cogrounding as train_video
import train_semantic_attention_visual_grounding as train_image
from app.cache import MANIFEST
from dataset.synthvid import cli as synthvid_cli
from model import SMALL_CFG, Darknet, build_grounding_model
from tests.helpers import reset_script_loggers, write_darknet_weights
from tools import build_refcoco, build_vid_sentence, detect
from utils.cli import run_main
from utils.io import safe_load
from utils.word_utils import load_corpus

EMB = 32


@dataclass
class Ctx:
    """What a case builds its command line from: the tiny set, a fresh working folder, two checkpoints, a cache."""

    root: Path  # the tiny synthetic set (read-only)
    work: Path  # this case's current directory
    video_ckpt: Path
    image_ckpt: Path
    cache: Path  # a complete cache of the test split, with its manifest (read-only: copy it to change it)

    def data(self, dataset: str = "VID") -> list[str]:
        return ["--data_root", str(self.root), "--split_root", str(self.root), "--dataset", dataset, "--size", "64"]

    def model(self, dataset: str = "VID") -> list[str]:
        return [*self.data(dataset), "--lstm", "--cfg", str(SMALL_CFG), "--emb_size", str(EMB), "--batch_size", "2",
                "--workers", "0", "--no_progress"]

    def train(self, dataset: str = "VID") -> list[str]:
        return [*self.model(dataset), "--nb_epoch", "1", "--savename", "case", "--darknet_weights", ""]

    def test(self, dataset: str = "VID") -> list[str]:
        ckpt = self.video_ckpt if dataset == "VID" else self.image_ckpt
        return [*self.model(dataset), "--test", "--resume", str(ckpt)]

    def ground(self) -> list[str]:
        """ground.py on the first test clip's frames (a folder) with the random video model."""
        return [str(self.root / "frames" / "test" / "vid_00000"), "--resume", str(self.video_ckpt), "--corpus",
                str(self.root / "VID" / "corpus.pth"), "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size",
                str(EMB), "--no_progress", "--phrase", "the triangle left of the square"]

    def frames(self, damage: Callable[[Path], object]) -> str:
        """A copy of the first test clip's frames with its second frame passed to ``damage``."""
        folder = Path(shutil.copytree(self.root / "frames" / "test" / "vid_00000", self.work / "clip"))
        damage(sorted(folder.iterdir())[1])
        return str(folder)

    def post(self, cache: Path | None = None) -> list[str]:
        return [*self.data(), "--no_progress", "--cache_dir", str(cache or self.cache)]

    def file(self, name: str, data: bytes = b"x") -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def copied_cache(self) -> Path:
        return Path(shutil.copytree(self.cache, self.work / "cache", copy_function=shutil.copy2))

    def video_index(self, edit: Callable[[list], None], split: str = "test", dataset: str = "VID") -> list[str]:
        """``--split_root`` of a copy of the tiny set's ``split`` index (absolute image paths) changed by ``edit``."""
        if dataset == "VID":
            name = f"VID_video_level_{split}.pth"
            entries = [[[str(self.root / p), box, phrase] for p, box, phrase in video]
                       for video in safe_load(self.root / "VID" / name, what="index file")]
        else:
            name = f"synthvid_{split}.pth"
            entries = [[str(self.root / dataset / item[0]), *item[1:]]
                       for item in safe_load(self.root / dataset / name, what="index file")]
        edit(entries)
        folder = self.work / "split" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for other in (self.root / dataset).glob("*.pth"):
            shutil.copy(other, folder / other.name)
        torch.save(entries, folder / name)
        return ["--split_root", str(folder.parent)]

    def frame(self, v: int = 0, t: int = 1, copy: bool = True) -> Path:
        """Test video ``v`` frame ``t`` copied into the working folder (to be damaged) under its own folder and file
        name (which name its cache file); with ``copy=False`` only the path, where no file is."""
        rel = Path(safe_load(self.root / "VID" / "VID_video_level_test.pth", what="index file")[v][t][0])
        target = self.work / "frames" / rel.parent.name / rel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.root / rel, target)) if copy else target

    def with_frame(self, path: Path, v: int = 0, t: int = 1) -> list[str]:
        """The test index with video ``v`` frame ``t`` read from ``path``."""
        def edit(videos: list) -> None:
            videos[v][t][0] = str(path)
        return self.video_index(edit)


def set_box(box: object, v: int = 0, t: int = 1) -> Callable[[list], None]:
    def edit(videos: list) -> None:
        videos[v][t][1] = box
    return edit


def set_phrase(phrase: object, v: int = 0) -> Callable[[list], None]:
    def edit(videos: list) -> None:
        for frame in videos[v]:
            frame[2] = phrase
    return edit


def set_item_box(box: object, i: int = 0) -> Callable[[list], None]:
    def edit(items: list) -> None:
        items[i][2] = box
    return edit


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def malicious_pickle(ctx: Ctx) -> Path:
    class Payload:
        def __reduce__(self) -> tuple:
            return os.system, ("touch pwned",)

    path = ctx.work / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    return path


def tiny_jpeg(ctx: Ctx) -> Path:
    path = ctx.work / "tiny.JPEG"
    assert cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    return path


def cache_with(ctx: Ctx, key: str, value: Callable[[dict], object]) -> Path:
    """A copy of the cache whose first file's ``key`` is replaced by ``value(entry)`` (manifest removed)."""
    cache = ctx.copied_cache()
    (cache / MANIFEST).unlink()
    first = sorted(cache.glob("*/*.pth"))[0]
    entry = torch.load(first, weights_only=True)
    entry[key] = value(entry)
    torch.save(entry, first)
    return cache


def foreign_file_cache(ctx: Ctx) -> Path:
    """A cache with one frame's file replaced by another frame's, as ``cp -p`` does (its time stamps kept)."""
    cache = ctx.copied_cache()
    first, second = sorted(cache.glob("*/*.pth"))[:2]
    shutil.copy2(second, first)
    return cache


def refer_root(ctx: Ctx, refs: object) -> str:
    folder = ctx.work / "refer" / "refcoco"
    folder.mkdir(parents=True)
    with (folder / "refs(unc).p").open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    (folder / "instances.json").write_text('{"annotations": []}')
    return str(ctx.work / "refer")


def vid_sentence_root(ctx: Ctx, bbox: str) -> list[str]:
    ann = ctx.work / "vs" / "Data" / "VID" / "annSamples"
    ann.mkdir(parents=True)
    for split, video in (("train", "v_train"), ("test", "v_test")):
        (ann / f"{split}_valid_list.txt").write_text(f"{video},0\n")
        (ann / f"{split}_ann_list_v2.txt").write_text("0, a red car\n")
        tube = ctx.work / "vs" / "Annotations" / "VID" / "tubeGt" / ("train" if split == "train" else "val")
        tube.mkdir(parents=True)
        (tube / f"{video}.js").write_text(
            f'{{"video": "{video}", "annotations": [{{"id": "0", "track": [{{"frame": 1, "bbox": {bbox}}}]}}]}}')
    return ["--vid_sentence_root", str(ctx.work / "vs"), "--vid_frames_root", str(ctx.work / "frames"),
            "--out", str(ctx.work / "out"), "--allow_missing"]


# script -> its module (the tools' main takes argv itself)
SCRIPTS: dict[str, ModuleType] = {"train_video": train_video, "train_image": train_image, "test_video": test_video,
                                  "post": post_processing, "ground": ground, "build_vid": build_vid_sentence,
                                  "build_refcoco": build_refcoco, "synthvid": synthvid_cli, "detect": detect}
TOOLS = ("build_vid", "build_refcoco", "synthvid", "detect")  # their main parses argv itself

Case = tuple[str, str, Callable[[Ctx], list[str]], tuple[str, ...] | int]
# (id, script, argv of the context, the fragments of the one error line, or the number of warnings of a run
# that completes)
CASES: list[Case] = [
    # ---- numeric and string flags, refused by the parser
    ("batch_size_0", "train_video", lambda c: [*c.train(), "--batch_size", "0"], ("--batch_size", ">= 1", "'0'")),
    ("batch_size_negative", "train_video", lambda c: [*c.train(), "--batch_size", "-3"], ("--batch_size", "'-3'")),
    ("batch_size_text", "test_video", lambda c: [*c.test(), "--batch_size", "two"], ("--batch_size", "'two'")),
    ("lr_negative", "train_video", lambda c: [*c.train(), "--lr", "-1"], ("--lr", "> 0")),
    ("lr_zero", "train_image", lambda c: [*c.train("synthvid"), "--lr", "0"], ("--lr", "> 0")),
    ("lr_nan", "train_video", lambda c: [*c.train(), "--lr", "nan"], ("--lr", "finite")),
    ("workers_negative", "train_video", lambda c: [*c.train(), "--workers", "-1"], ("--workers", ">= 0")),
    ("emb_size_0", "train_video", lambda c: [*c.train(), "--emb_size", "0"], ("--emb_size", ">= 1")),
    ("size_not_multiple_of_32", "train_video", lambda c: [*c.train(), "--size", "100"], ("--size", "multiple of 32")),
    ("size_0", "test_video", lambda c: [*c.test(), "--size", "0"], ("--size", "multiple of 32")),
    ("time_0", "train_video", lambda c: [*c.train(), "--time", "0"], ("--time", ">= 1")),
    ("nb_epoch_0", "train_video", lambda c: [*c.train(), "--nb_epoch", "0"], ("--nb_epoch", ">= 1")),
    ("nb_epoch_0_image", "train_image", lambda c: [*c.train("synthvid"), "--nb_epoch", "0"], ("--nb_epoch",)),
    ("num_frame_k_0_test", "test_video", lambda c: [*c.test(), "--num_frame_k", "0"], ("--num_frame_k", ">= 1")),
    ("num_frame_k_0_post", "post", lambda c: [*c.post(), "--num_frame_k", "0"], ("--num_frame_k", ">= 1")),
    ("print_freq_negative", "train_video", lambda c: [*c.train(), "--print_freq", "-1"], ("--print_freq", ">= 0")),
    ("warmup_negative", "train_video", lambda c: [*c.train(), "--warmup_iters", "-5"], ("--warmup_iters",)),
    ("weight_decay_negative", "train_image", lambda c: [*c.train("synthvid"), "--weight_decay", "-1"],
     ("--weight_decay", ">= 0")),
    ("power_inf", "train_video", lambda c: [*c.train(), "--power", "inf"], ("--power", "finite")),
    ("backbone_lr_scale_negative", "train_video", lambda c: [*c.train(), "--backbone_lr_scale", "-0.1"],
     ("--backbone_lr_scale",)),
    ("seed_negative", "train_video", lambda c: [*c.train(), "--seed", "-1"], ("--seed", "from 0")),
    ("anchor_imsize_0", "test_video", lambda c: [*c.test(), "--anchor_imsize", "0"], ("--anchor_imsize",)),
    ("gpu_text", "test_video", lambda c: [*c.test(), "--gpu", "first"], ("--gpu", "device ids")),
    ("max_plots_0", "test_video", lambda c: [*c.test(), "--max_plots", "0"], ("--max_plots", ">= 1")),
    ("max_plots_negative_post", "post", lambda c: [*c.post(), "--max_plots", "-1"], ("--max_plots",)),
    ("size_33_post", "post", lambda c: [*c.post(), "--size", "33"], ("--size", "multiple of 32")),
    ("unknown_dataset", "test_video", lambda c: [*c.test(), "--dataset", "ImageNet"], ("--dataset", "ImageNet")),
    ("post_without_cache_dir", "post", lambda c: c.data(), ("--cache_dir",)),
    ("refcoco_unknown_dataset", "build_refcoco", lambda c: ["--refer_root", "x", "--dataset", "coco"],
     ("--dataset", "coco")),
    # ---- outputs checked before any work
    ("save_dir_is_a_file", "train_video", lambda c: [*c.train(), "--save_dir", str(c.file("ckpts"))],
     ("--save_dir", "is a file")),
    ("save_dir_under_a_file", "train_video", lambda c: [*c.train(), "--save_dir", str(c.file("f") / "ckpts")],
     ("--save_dir", "is a file, not a folder")),
    ("log_dir_under_a_file", "train_image", lambda c: [*c.train("synthvid"), "--log_dir", str(c.file("f") / "l")],
     ("--log_dir", "cannot be created")),
    ("save_pred_is_a_folder", "test_video", lambda c: [*c.test(), "--save_pred", str(c.work)],
     ("--save_pred", "is a folder")),
    ("save_pred_under_a_file", "test_video", lambda c: [*c.test(), "--save_pred", str(c.file("f") / "p.jsonl")],
     ("--save_pred", "cannot be created")),
    ("save_pred_exists", "test_video", lambda c: [*c.test(), "--save_pred", str(c.file("p.jsonl"))],
     ("--save_pred", "already exists", "--overwrite")),
    ("save_plot_is_a_file", "test_video", lambda c: [*c.test(), "--save_plot", str(c.file("plots"))],
     ("--save_plot", "is a file")),
    ("cache_dir_under_a_file", "test_video", lambda c: [*c.test(), "--cache", "--cache_dir",
                                                        str(c.file("f") / "cache")], ("--cache_dir",)),
    ("cache_dir_not_empty", "test_video", lambda c: [*c.test(), "--cache", "--cache_dir", str(c.copied_cache())],
     ("--cache_dir", "already exists", "--overwrite")),
    ("post_save_pred_under_a_file", "post", lambda c: [*c.post(), "--save_pred", str(c.file("f") / "p.jsonl")],
     ("--save_pred",)),
    ("post_log_dir_is_a_file", "post", lambda c: [*c.post(), "--log_dir", str(c.file("logs"))],
     ("--log_dir", "is a file")),
    # ---- inputs named on the command line
    ("darknet_weights_missing", "train_video", lambda c: [*c.train(), "--darknet_weights", "nowhere.weights"],
     ("--darknet_weights nowhere.weights not found",)),
    ("pretrain_missing", "train_video", lambda c: [*c.train(), "--pretrain", "nowhere.pth"],
     ("checkpoint not found: nowhere.pth", "--pretrain")),
    ("resume_missing", "test_video", lambda c: [*c.model(), "--test", "--resume", "nowhere.pth"],
     ("checkpoint not found: nowhere.pth",)),
    ("test_without_resume", "test_video", lambda c: c.model(), ("--resume",)),
    ("resume_random_bytes", "test_video",
     lambda c: [*c.model(), "--test", "--resume", str(c.file("r.pth", np.random.default_rng(0).bytes(4000)))],
     ("r.pth is not a valid checkpoint",)),
    ("resume_text_file", "train_image", lambda c: [*c.model("synthvid"), "--test", "--resume",
                                                   str(c.file("notes.pth", b"hello world\n"))],
     ("notes.pth is not a valid checkpoint",)),
    ("resume_empty_file", "test_video", lambda c: [*c.model(), "--test", "--resume", str(c.file("e.pth", b""))],
     ("e.pth is empty",)),
    ("resume_malicious_pickle", "test_video", lambda c: [*c.model(), "--test", "--resume", str(malicious_pickle(c))],
     ("evil.pth was refused", "system")),
    ("resume_truncated", "test_video", lambda c: [*c.model(), "--test", "--resume",
                                                  str(truncated(Path(shutil.copy(c.video_ckpt, c.work / "t.pth"))))],
     ("t.pth is truncated",)),
    ("resume_image_checkpoint_in_video_script", "test_video",
     lambda c: [*c.model(), "--test", "--resume", str(c.image_ckpt)], ("missing keys: corr_conv",)),
    ("corpus_random_bytes", "test_video", lambda c: [*c.test(), "--corpus", str(c.file("c.pth", b"\x80\x02junk"))],
     ("corpus file", "c.pth")),
    ("corpus_is_a_checkpoint", "test_video", lambda c: [*c.test(), "--corpus", str(c.video_ckpt)],
     ("corpus file", "does not hold a utils.word_utils.Corpus")),
    ("index_missing", "test_video", lambda c: [*c.test(), "--test_split", "val", "--split_root", str(c.work),
                                               "--corpus", str(c.root / "VID" / "corpus.pth")],
     ("index file for split 'val' not found",)),
    # ---- ground-truth boxes, checked when the index is loaded (post-processing: with a cache without manifest, as
    # the authors'; a cache with one refuses an index other than the one it was written from)
    ("box_three_numbers", "test_video", lambda c: [*c.test(), *c.video_index(set_box([1, 2, 3]))],
     ("video 0 frame 1", "[1, 2, 3]", "4 numbers")),
    ("box_text", "test_video", lambda c: [*c.test(), *c.video_index(set_box("10 10 20 20"))],
     ("video 0 frame 1", "4 numbers")),
    ("box_none", "test_video", lambda c: [*c.test(), *c.video_index(set_box(None, 1, 0))],
     ("video 1 frame 0", "None")),
    ("box_nan", "test_video", lambda c: [*c.test(), *c.video_index(set_box([1.0, float("nan"), 5.0, 9.0]))],
     ("video 0 frame 1", "NaN")),
    ("box_inf", "train_video", lambda c: [*c.train(), *c.video_index(set_box([1, 2, float("inf"), 9]), "train")],
     ("video 0 frame 1", "infinite")),
    ("box_huge", "test_video", lambda c: [*c.test(), *c.video_index(set_box([1, 2, 1e30, 9]))], ("out-of-range",)),
    ("box_inverted", "test_video", lambda c: [*c.test(), *c.video_index(set_box([30, 30, 10, 40]))],
     ("video 0 frame 1", "[30, 30, 10, 40]", "inverted")),
    ("box_left_of_image", "post", lambda c: [*c.post(), *c.video_index(set_box([-30, 5, -10, 20]))],
     ("video 0 frame 1", "left of or above")),
    ("box_outside_image", "test_video", lambda c: [*c.test(), *c.video_index(set_box([900, 5, 950, 20]))],
     ("video 0 frame 1", "outside the", "image")),
    ("box_outside_image_post", "post",
     lambda c: [*c.post(_no_manifest_cache(c)), *c.video_index(set_box([900, 5, 950, 20]))],
     ("video 0 frame 1", "outside the")),
    ("box_outside_image_in_a_worker", "test_video",
     lambda c: [*c.test(), "--workers", "1", *c.video_index(set_box([900, 5, 950, 20]))], ("video 0 frame 1",)),
    ("image_box_negative_width", "train_image",
     lambda c: [*c.train("synthvid"), *c.video_index(set_item_box([5, 5, -3, 10]), "train", "synthvid")],
     ("item 0", "negative width")),
    ("image_path_not_a_string", "train_image",
     lambda c: [*c.train("synthvid"), *c.video_index(lambda items: items[1].__setitem__(0, 7), "train", "synthvid")],
     ("item 1", "image path")),
    ("frame_not_a_triple", "test_video", lambda c: [*c.test(), *c.video_index(lambda v: v[0].append(["x"]))],
     ("video 0", "(image_path, box, phrase)")),
    ("index_not_a_list", "test_video", lambda c: [*c.test(), *c.video_index(lambda v: v.clear())],
     ("non-empty list",)),
    ("empty_phrase", "test_video", lambda c: [*c.test(), *c.video_index(set_phrase("  "))],
     ("video 0 frame 0", "phrase")),
    ("phrase_none", "train_video", lambda c: [*c.train(), *c.video_index(set_phrase(None, 1), "train")],
     ("video 1 frame 0", "phrase", "None")),
    # ---- frames
    ("frame_missing", "test_video", lambda c: [*c.test(), *c.with_frame(c.frame(copy=False))],
     ("000001.JPEG", "is missing")),
    ("frame_missing_post", "post", lambda c: [*c.post(_no_manifest_cache(c)), *c.with_frame(c.frame(copy=False))],
     ("000001.JPEG", "is missing")),
    ("frame_truncated_jpeg", "test_video", lambda c: [*c.test(), *c.with_frame(truncated(c.frame()))],
     ("000001.JPEG", "truncated")),
    ("frame_truncated_jpeg_in_a_worker", "test_video",
     lambda c: [*c.test(), "--workers", "2", *c.with_frame(truncated(c.frame()))], ("000001.JPEG", "truncated")),
    ("frame_truncated_jpeg_post", "post",
     lambda c: [*c.post(_no_manifest_cache(c)), *c.with_frame(truncated(c.frame()))],
     ("000001.JPEG", "truncated")),
    ("frame_not_an_image_post", "post",
     lambda c: [*c.post(_no_manifest_cache(c)), *c.with_frame(_not_an_image(c.frame()))],
     ("000001.JPEG", "cannot be decoded")),
    ("frame_1x1", "test_video", lambda c: [*c.test(), *c.with_frame(tiny_jpeg(c))], ("video 0 frame 1", "1x1")),
    # ---- caches
    ("cache_nan_score", "post", lambda c: c.post(cache_with(c, "pred_score_topk", lambda e: [float("nan")] * 5)),
     ("pred_score_topk", "NaN")),
    ("cache_inf_feature", "post",
     lambda c: c.post(cache_with(c, "visu_feat", lambda e: e["visu_feat"].fill_(float("inf")))), ("visu_feat",)),
    ("cache_missing_key", "post", lambda c: c.post(cache_with(c, "visu_feat", lambda e: None)), ("visu_feat",)),
    ("cache_random_bytes", "post", lambda c: c.post(_random_cache_file(c)), ("is not a valid cache file",)),
    ("cache_mixed_from_two_runs", "post", lambda c: c.post(foreign_file_cache(c)),
     ("not the output of one run", "content differs")),
    ("cache_extra_file", "post", lambda c: c.post(_extra_file_cache(c)), ("not the output of one run",)),
    ("cache_damaged_manifest", "post", lambda c: c.post(_damaged_manifest_cache(c)), ("manifest", "damaged")),
    ("cache_folder_missing", "post", lambda c: c.post(c.work / "nowhere"), ("cache folder", "not found")),
    # ---- tools
    ("build_vid_missing_root", "build_vid", lambda c: ["--vid_sentence_root", str(c.work / "no"),
                                                       "--vid_frames_root", str(c.root / "frames")],
     ("tube list not found",)),
    ("build_vid_nan_bbox", "build_vid", lambda c: vid_sentence_root(c, "[1, 2, NaN, 4]"),
     ("track[0]", "bbox")),
    ("build_vid_three_number_bbox", "build_vid", lambda c: vid_sentence_root(c, "[1, 2, 3]"), ("bbox",)),
    ("build_refcoco_missing_root", "build_refcoco", lambda c: ["--refer_root", str(c.work / "no"),
                                                               "--dataset", "unc"], ("refs pickle not found",)),
    ("build_refcoco_not_a_list", "build_refcoco", lambda c: ["--refer_root", refer_root(c, {"a": 1}),
                                                             "--dataset", "unc"], ("expected a list of refs",)),
    # ---- ground.py
    ("ground_stride_0", "ground", lambda c: [*c.ground(), "--stride", "0"], ("--stride", ">= 1")),
    ("ground_top_k_9", "ground", lambda c: [*c.ground(), "--top_k", "9"], ("--top_k", "from 1 to 5")),
    ("ground_batch_size_0", "ground", lambda c: [*c.ground(), "--batch_size", "0"], ("--batch_size",)),
    ("ground_fps_negative", "ground", lambda c: [*c.ground(), "--fps", "-25"], ("--fps", "> 0")),
    ("ground_size_100", "ground", lambda c: [*c.ground(), "--size", "100"], ("--size", "multiple of 32")),
    ("ground_gpu_text", "ground", lambda c: [*c.ground(), "--gpu", "cuda:0"], ("--gpu",)),
    ("ground_no_output", "ground", lambda c: c.ground(), ("nothing to write", "--out_jsonl")),
    ("ground_phrases_file_missing", "ground", lambda c: [*c.ground(), "--phrases", "nowhere.txt"],
     ("--phrases nowhere.txt not found",)),
    ("ground_input_missing", "ground", lambda c: ["nowhere.mp4", *c.ground()[1:], "--out_jsonl", "o.jsonl"],
     ("input nowhere.mp4 not found",)),
    ("ground_out_jsonl_exists", "ground", lambda c: [*c.ground(), "--out_jsonl", str(c.file("o.jsonl"))],
     ("--out_jsonl", "--overwrite")),
    ("ground_out_jsonl_under_a_file", "ground", lambda c: [*c.ground(), "--out_jsonl", str(c.file("f") / "o.jsonl")],
     ("--out_jsonl", "cannot be created")),
    ("ground_resume_random_bytes", "ground", lambda c: [*c.ground(), "--out_jsonl", "o.jsonl", "--resume",
                                                        str(c.file("r.pth", np.random.default_rng(2).bytes(999)))],
     ("r.pth is not a valid checkpoint",)),
    ("ground_sentence_without_a_known_word", "ground", lambda c: [*c.ground(), "--out_jsonl", "o.jsonl", "--phrase",
                                                                  "zebra xylophone"], ("'zebra xylophone'",)),
    ("ground_truncated_frame", "ground", lambda c: [c.frames(truncated), *c.ground()[1:], "--out_jsonl", "o.jsonl"],
     ("000001.JPEG", "truncated")),
    ("synthvid_seed_negative", "synthvid", lambda c: ["--out", "sv", "--seed", "-5"], ("--seed", "from 0")),
    ("synthvid_workers_0", "synthvid", lambda c: ["--out", "sv", "--workers", "0"], ("--workers", ">= 1")),
    ("synthvid_train_videos_negative", "synthvid", lambda c: ["--out", "sv", "--train_videos", "-1"],
     ("--train_videos", ">= 0")),
    ("synthvid_occlusion_rate_2", "synthvid", lambda c: ["--out", "sv", "--occlusion", "2"], ("--occlusion", "0..1")),
    ("detect_size_100", "detect", lambda c: ["--cfg", str(SMALL_CFG), "--weights", "w", "--image", "i.jpg",
                                             "--size", "100"], ("--size", "multiple of 32")),
    ("detect_top_0", "detect", lambda c: ["--cfg", str(SMALL_CFG), "--weights", "w", "--image", "i.jpg",
                                          "--top", "0"], ("--top", ">= 1")),
    ("detect_cfg_missing", "detect", lambda c: ["--cfg", "no.cfg", "--weights", "w", "--image", "i.jpg"],
     ("no.cfg",)),
    # ---- runs that complete, with their documented warnings
    ("default_darknet_weights_absent", "train_video",
     lambda c: [arg for arg in c.train() if arg not in ("--darknet_weights", "")], 0),
    ("zero_width_box_at_test", "test_video", lambda c: [*c.test(), *c.video_index(set_box([20, 20, 20.7, 40]))], 1),
    ("zero_width_box_in_training", "train_video",
     lambda c: [*c.train(), *c.video_index(set_box([20, 20, 20.7, 40]), "train")], 1),
    ("phrase_without_a_known_word", "test_video", lambda c: [*c.test(), *c.video_index(set_phrase("zzz qqq"))], 1),
    ("cache_without_manifest", "post", lambda c: c.post(_no_manifest_cache(c)), 0),
    ("ground_sentence_with_an_unknown_word", "ground",
     lambda c: [*c.ground(), "--out_jsonl", "o.jsonl", "--phrase", "the zebra left of the square"], 1),
]



# ==== encodings, non-finite numbers, truncation and ignored flags, geometry edges, tools, windows, wording ====
# (docs/behaviour.md §10: one rule each, the same in every entry point it applies to)

LATIN1 = "the café left of the square\n".encode("latin-1")  # é is byte 0xe9 at offset 7
BOM = b"\xef\xbb\xbf"


def ckpt_with(ctx: Ctx, name: str, edit: Callable[[dict], None], kind: str = "video") -> Path:
    """A copy of the random ``kind`` checkpoint changed by ``edit`` (of the whole checkpoint dict)."""
    checkpoint = torch.load(ctx.video_ckpt if kind == "video" else ctx.image_ckpt, weights_only=True)
    edit(checkpoint)
    path = ctx.work / name
    torch.save(checkpoint, path)
    return path


def poison(key: str, value: float) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["state_dict"][key].view(-1)[3] = value
    return edit


def with_inference(**settings: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["inference"] = settings
    return edit


NAN_KEY = "visumodel.module_list.2.conv_2.weight"  # a backbone convolution of the small cfg, in both models
TEXT_KEY = "textmodel.embedding.weight"


def image_file(ctx: Ctx, name: str, h: int, w: int) -> Path:
    path = ctx.work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), 90, np.uint8)
    img[:, : max(1, w // 3)] = (20, 180, 240)
    assert cv2.imwrite(str(path), img)
    return path


def video_file(ctx: Ctx, name: str = "clip.mp4", frames: int = 4, truncate: bool = False) -> Path:
    """A small mp4 (mp4v) of the first test clip's frames; ``truncate`` cuts its tail (and so its moov atom)."""
    path = ctx.work / name
    sources = sorted((ctx.root / "frames" / "test" / "vid_00000").iterdir())[:frames]
    first = cv2.imread(str(sources[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (first.shape[1], first.shape[0]))
    for source in sources:
        writer.write(cv2.imread(str(source)))
    writer.release()
    return truncated(path) if truncate else path


def mixed_sizes(ctx: Ctx) -> str:
    """The first test clip's frames with the second one replaced by an image of another size."""
    def damage(path: Path) -> None:
        img = cv2.imread(str(path))
        assert cv2.imwrite(str(path), cv2.resize(img, (img.shape[1] // 2 + 3, img.shape[0] + 10)))
    return ctx.frames(damage)


def detect_weights(ctx: Ctx) -> str:
    from model.darknet import Darknet
    from tests.helpers import write_darknet_weights
    torch.manual_seed(0)
    return str(write_darknet_weights(Darknet(SMALL_CFG), ctx.work / "small.weights"))


def ground_with(ctx: Ctx, *extra: str, inputs: list[str] | None = None) -> list[str]:
    argv = ctx.ground()
    return [*(inputs or argv[:1]), *argv[1:], *extra]


def phrases_file(ctx: Ctx, data: bytes) -> list[str]:
    return [*ctx.ground()[:-2], "--phrases", str(ctx.file("phrases.txt", data)), "--out_jsonl", "o.jsonl"]


def vid_root_edit(ctx: Ctx, relative: str, data: bytes, bbox: str = "[1, 2, 30, 40]") -> list[str]:
    """The small VID-Sentence tree with one of its files (relative to its root) replaced by ``data``."""
    argv = vid_sentence_root(ctx, bbox)
    (ctx.work / "vs" / relative).write_bytes(data)
    return argv


ANN = "Data/VID/annSamples"
TUBE = "Annotations/VID/tubeGt/train/v_train.js"
TUBE_JSON = b'{"video": "v_train", "annotations": [{"id": "0", "track": [{"frame": 1, "bbox": [1, 2, 30, 40]}]}]}'


def refcoco_root(ctx: Ctx, bbox: list[float] | None = None, instances: bytes | None = None) -> list[str]:
    """A one-ref refcoco tree (and ``--out``): ``bbox`` of its annotation, or ``instances.json`` bytes."""
    refs = [{"ref_id": 1, "ann_id": 5, "image_id": 7, "split": "train", "sentences": [{"sent": "a red car"}]}]
    root = refer_root(ctx, refs)
    box = [1, 2, 30, 40] if bbox is None else bbox
    data = instances if instances is not None else json.dumps(
        {"annotations": [{"id": 5, "image_id": 7, "bbox": box}]}).encode()
    (Path(root) / "refcoco" / "instances.json").write_bytes(data)
    return ["--refer_root", root, "--dataset", "unc", "--out", str(ctx.work / "unc")]


def detect_args(ctx: Ctx, image: Path | str, *extra: str) -> list[str]:
    return ["--cfg", str(SMALL_CFG), "--weights", detect_weights(ctx), "--image", str(image), "--size", "64",
            *extra]


EDGE_CASES: list[Case] = [
    # ---- 4. text inputs: UTF-8 with or without a byte-order mark, else one line with the file and byte offset
    ("phrases_latin1", "ground", lambda c: phrases_file(c, LATIN1), ("phrases.txt", "not UTF-8", "byte 7")),
    ("phrases_utf16", "ground", lambda c: phrases_file(c, "the square\n".encode("utf-16")),
     ("phrases.txt", "not UTF-8", "byte 0")),
    ("phrases_with_bom", "ground", lambda c: phrases_file(c, BOM + b"the triangle left of the square\n"), 0),
    ("names_latin1", "detect", lambda c: detect_args(c, c.root / "frames" / "test" / "vid_00000" / "000000.JPEG",
                                                     "--names", str(c.file("n.names", LATIN1))),
     ("n.names", "not UTF-8", "byte 7")),
    ("cfg_latin1", "test_video", lambda c: [*c.test(), "--cfg", str(c.file("bad.cfg", b"[net]\n# caf\xe9\n"))],
     ("bad.cfg", "not UTF-8", "byte 11")),
    ("ann_list_latin1", "build_vid", lambda c: vid_root_edit(c, f"{ANN}/train_ann_list_v2.txt", b"0, " + LATIN1),
     ("train_ann_list_v2.txt", "not UTF-8", "byte 10")),
    ("valid_list_with_bom", "build_vid", lambda c: vid_root_edit(c, f"{ANN}/train_valid_list.txt",
                                                                 BOM + b"v_train,0\n"), 1),
    ("tube_file_latin1", "build_vid", lambda c: vid_root_edit(c, TUBE, TUBE_JSON.replace(b"v_train\"", b"v_tr\xe9\"")),
     ("v_train.js", "not UTF-8", "byte 15")),
    ("tube_file_with_bom", "build_vid", lambda c: vid_root_edit(c, TUBE, BOM + TUBE_JSON), 1),
    ("instances_with_bom", "build_refcoco",
     lambda c: refcoco_root(c, instances=BOM + b'{"annotations": [{"id": 5, "image_id": 7, "bbox": [1, 2, 3, 4]}]}'),
     0),
    ("instances_latin1", "build_refcoco", lambda c: refcoco_root(c, instances=b'{"annotations": [], "x": "\xe9"}'),
     ("instances.json", "not UTF-8", "byte 26")),
    # ---- 5. weights that are not numbers: refused when the checkpoint loads, naming the first bad tensor
    ("ground_resume_nan_weights", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--resume", str(ckpt_with(c, "nan.pth",
                                                                                  poison(NAN_KEY, float("nan")))))
     , ("nan.pth", NAN_KEY, "NaN")),
    ("test_resume_inf_weights", "test_video",
     lambda c: [*c.model(), "--test", "--resume", str(ckpt_with(c, "inf.pth", poison(TEXT_KEY, float("inf"))))],
     ("inf.pth", TEXT_KEY, "inf")),
    ("test_image_resume_nan_weights", "train_image",
     lambda c: [*c.model("synthvid"), "--test", "--resume",
                str(ckpt_with(c, "nan.pth", poison(NAN_KEY, float("nan")), "image"))], ("nan.pth", NAN_KEY)),
    ("train_pretrain_nan_weights", "train_video",
     lambda c: [*c.train(), "--pretrain", str(ckpt_with(c, "nan.pth", poison(TEXT_KEY, float("-inf"))))],
     ("nan.pth", TEXT_KEY)),
    ("train_resume_nan_weights", "train_video",
     lambda c: [*c.train(), "--resume", str(ckpt_with(c, "nan.pth", poison(NAN_KEY, float("nan"))))],
     ("nan.pth", NAN_KEY)),
    ("detect_weights_nan", "detect", lambda c: ["--cfg", str(SMALL_CFG), "--weights", _nan_darknet_weights(c),
                                                "--image", "i.jpg"], ("small.weights", "module_list.0", "NaN")),
    # ---- 6. truncation and ignored values: honoured, or said in one line
    ("ground_phrase_longer_than_time", "ground", lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--time", "3"), 1),
    ("test_phrase_known_only_past_time", "test_video",
     lambda c: [*c.test(), "--time", "1", *c.video_index(set_phrase("zzz triangle square"))], 2),
    ("ground_amp_dtype_without_amp", "ground", lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--amp_dtype",
                                                                     "bf16"), 1),
    ("test_amp_dtype_without_amp", "test_video", lambda c: [*c.test(), "--amp_dtype", "bf16"], 1),
    ("test_cache_dir_without_cache", "test_video", lambda c: [*c.test(), "--cache_dir", "somewhere"], 1),
    ("post_max_plots_without_save_plot", "post", lambda c: [*c.post(), "--max_plots", "3"], 1),
    ("train_save_pred_when_training", "train_video", lambda c: [*c.train(), "--save_pred", "p.jsonl"], 1),
    ("test_lr_with_test", "train_image", lambda c: [*c.model("synthvid"), "--test", "--resume", str(c.image_ckpt),
                                                    "--lr", "0.1", "--nb_epoch", "3"], 1),
    ("ground_fps_for_a_video", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--fps", "5", inputs=[str(video_file(c))]), 1),
    ("ground_stride_longer_than_the_clip", "ground", lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--stride",
                                                                           "50"), 1),
    ("test_anchor_imsize_disagrees_with_checkpoint", "test_video",
     lambda c: [*c.model(), "--test", "--anchor_imsize", "416", "--resume",
                str(ckpt_with(c, "inf.pth", with_inference(anchor_imsize=64)))], 1),
    ("test_size_from_checkpoint", "test_video",
     lambda c: [*[a for a in c.model() if a not in ("--size", "64")], "--test", "--resume",
                str(ckpt_with(c, "s.pth", with_inference(size=64, anchor_imsize=416)))], 0),
    # ---- 8. geometry at the edges: every letterboxed side >= 1
    ("ground_4000x16_image", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", inputs=[str(image_file(c, "wide.png", 16, 4000))]), 0),
    ("ground_16x4000_image", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", inputs=[str(image_file(c, "tall.png", 4000, 16))]), 0),
    ("ground_1x1_image", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", inputs=[str(image_file(c, "dot.png", 1, 1))]), 0),
    ("ground_1x1_frames_to_video_and_gif", "ground",
     lambda c: ground_with(c, "--out_video", "o.mp4", "--out_gif", "o.gif", inputs=[_tiny_frames(c)]), 0),
    ("ground_mixed_sizes_to_video", "ground", lambda c: ground_with(c, "--out_video", "o.mp4", inputs=[mixed_sizes(c)]),
     0),
    ("ground_mixed_sizes_to_gif", "ground", lambda c: ground_with(c, "--out_gif", "o.gif", inputs=[mixed_sizes(c)]),
     0),
    ("test_4000x16_frame_in_an_index", "test_video", lambda c: [*c.test(), *c.video_index(_wide_frame(c))], 0),
    ("detect_letterbox_4000x16", "detect", lambda c: detect_args(c, image_file(c, "wide.png", 16, 4000),
                                                                 "--letterbox"), 0),
    # ---- 9. tools that would write nothing useful
    ("build_vid_empty_sentence_list", "build_vid", lambda c: vid_root_edit(c, f"{ANN}/test_ann_list_v2.txt", b""),
     ("test", "no sentence")),
    ("build_vid_inverted_box", "build_vid", lambda c: vid_sentence_root(c, "[30, 30, 10, 40]"), ("inverted",)),
    ("build_vid_out_is_a_file", "build_vid", lambda c: [*vid_sentence_root(c, "[1, 2, 30, 40]"), "--out",
                                                        str(c.file("out_file"))], ("--out", "is a file")),
    ("build_refcoco_negative_width", "build_refcoco", lambda c: refcoco_root(c, [5, 5, -3, 10]), ("negative width",)),
    ("build_refcoco_out_is_a_file", "build_refcoco", lambda c: [*refcoco_root(c), "--out", str(c.file("o"))],
     ("--out", "is a file")),
    ("synthvid_out_under_a_file", "synthvid", lambda c: ["--out", str(c.file("f") / "sub")],
     ("--out", "is a file")),
    ("synthvid_out_is_a_file", "synthvid", lambda c: ["--out", str(c.file("f"))], ("--out", "is a file")),
    # ---- 10. --num_frame_k: 2 (training pairs) or an odd number >= 3 (evaluation windows)
    ("num_frame_k_2_test", "test_video", lambda c: [*c.test(), "--num_frame_k", "2"], ("--num_frame_k", "odd")),
    ("num_frame_k_1_test", "test_video", lambda c: [*c.test(), "--num_frame_k", "1"], ("--num_frame_k",)),
    ("num_frame_k_4_test", "test_video", lambda c: [*c.test(), "--num_frame_k", "4"], ("--num_frame_k",)),
    ("num_frame_k_2_post", "post", lambda c: [*c.post(), "--num_frame_k", "2"], ("--num_frame_k", "odd")),
    ("num_frame_k_3_train", "train_video", lambda c: [*c.train(), "--num_frame_k", "3"], ("--num_frame_k", "2")),
    ("num_frame_k_3_test", "test_video", lambda c: [*c.test(), "--num_frame_k", "3"], 0),
    # ---- 11. wording: a folder is a folder, no decoder noise, output suffixes match the format
    ("phrases_is_a_folder", "ground", lambda c: [*c.ground(), "--phrases", str(c.work), "--out_jsonl", "o.jsonl"],
     ("--phrases", "is a folder")),
    ("resume_is_a_folder", "test_video", lambda c: [*c.model(), "--test", "--resume", str(c.work)],
     ("--resume", "is a folder")),
    ("ground_resume_is_a_folder", "ground", lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--resume",
                                                                 str(c.work)), ("is a folder",)),
    ("corpus_is_a_folder", "test_video", lambda c: [*c.test(), "--corpus", str(c.work)], ("corpus", "is a folder")),
    ("cfg_is_a_folder", "ground", lambda c: ground_with(c, "--out_jsonl", "o.jsonl", "--cfg", str(c.work)),
     ("cfg", "is a folder")),
    ("names_is_a_folder", "detect", lambda c: ["--cfg", str(SMALL_CFG), "--weights", "w", "--image", "i.jpg",
                                               "--names", str(c.work)], ("is a folder",)),
    ("weights_is_a_folder", "detect", lambda c: ["--cfg", str(SMALL_CFG), "--weights", str(c.work), "--image",
                                                 "i.jpg"], ("Darknet weights", "is a folder")),
    ("frame_is_a_folder", "test_video", lambda c: [*c.test(), *c.with_frame(c.work)], ("is a folder",)),
    ("image_input_is_a_folder_among_images", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", inputs=[str(c.frame()), str(_folder_named(c, "b.png"))]),
     ("b.png", "is a folder")),
    ("ground_truncated_video", "ground",
     lambda c: ground_with(c, "--out_jsonl", "o.jsonl", inputs=[str(video_file(c, truncate=True))]),
     ("clip.mp4", "cannot be decoded")),
    ("out_gif_named_png", "ground", lambda c: ground_with(c, "--out_gif", "o.png"), ("--out_gif", ".gif")),
    ("out_video_named_gif", "ground", lambda c: ground_with(c, "--out_video", "o.gif"), ("--out_video", ".mp4")),
    ("out_jsonl_named_mp4", "ground", lambda c: ground_with(c, "--out_jsonl", "o.mp4"), ("--out_jsonl", ".jsonl")),
    ("save_pred_named_png", "test_video", lambda c: [*c.test(), "--save_pred", "p.png"], ("--save_pred", ".jsonl")),
]


def _wide_frame(ctx: Ctx) -> Callable[[list], None]:
    """Test video 0 frame 1 read from a 4000 x 16 image, with a box inside it."""
    path = image_file(ctx, "frames/w/000001.png", 16, 4000)

    def edit(videos: list) -> None:
        videos[0][1][:2] = [str(path), [100, 2, 900, 14]]
    return edit


def _folder_named(ctx: Ctx, name: str) -> Path:
    (ctx.work / name).mkdir()
    return ctx.work / name


def _nan_darknet_weights(ctx: Ctx) -> str:
    path = Path(detect_weights(ctx))
    data = bytearray(path.read_bytes())
    data[20 + 4 * 5: 20 + 4 * 6] = np.array([np.nan], "<f4").tobytes()  # value 5 after the 20-byte header
    path.write_bytes(bytes(data))
    return str(path)


def _tiny_frames(ctx: Ctx) -> str:
    folder = ctx.work / "dots"
    for i in range(3):
        image_file(ctx, f"dots/{i:03d}.png", 1, 1)
    return str(folder)


def _not_an_image(path: Path) -> Path:
    path.write_bytes(b"GIF89a but not really")
    return path


def _random_cache_file(ctx: Ctx) -> Path:
    cache = ctx.copied_cache()
    (cache / MANIFEST).unlink()
    sorted(cache.glob("*/*.pth"))[2].write_bytes(np.random.default_rng(1).bytes(3000))
    return cache


def _extra_file_cache(ctx: Ctx) -> Path:
    cache = ctx.copied_cache()
    first = sorted(cache.glob("*/*.pth"))[0]
    shutil.copy2(first, first.with_name("000099_99.pth"))
    return cache


def _damaged_manifest_cache(ctx: Ctx) -> Path:
    cache = ctx.copied_cache()
    (cache / MANIFEST).write_text("{not json")
    return cache


def _no_manifest_cache(ctx: Ctx) -> Path:
    cache = ctx.copied_cache()
    (cache / MANIFEST).unlink()
    return cache


def run(script: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """The script's command line in this process: (exit code, stdout, stderr); usage errors exit via SystemExit."""
    module = SCRIPTS[script]
    try:
        if script in TOOLS:
            code = module.main(argv)
        else:
            code = run_main(module.main, module.get_args_parser(), argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def assets(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised checkpoints of both models (no training needed to fail or pass validation) and a
    complete cache of the tiny test split written by the test script."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("assets")
    vocab = len(load_corpus(tiny_root / "VID" / "corpus.pth"))
    found = {}
    for kind, corpus in (("video", "VID"), ("image", "synthvid")):
        torch.manual_seed(0)
        model = build_grounding_model(kind, len(load_corpus(tiny_root / corpus / "corpus.pth")), SMALL_CFG,
                                      image_size=64, emb_size=EMB)
        found[kind] = folder / f"{kind}.pth"
        torch.save({"state_dict": model.state_dict()}, found[kind])
    assert vocab
    found["cache"] = folder / "cache"
    code = run_main(test_video.main, test_video.get_args_parser(), [
        "--data_root", str(tiny_root), "--split_root", str(tiny_root), "--size", "64", "--lstm", "--cfg",
        str(SMALL_CFG), "--emb_size", str(EMB), "--batch_size", "2", "--workers", "0", "--no_progress", "--test",
        "--resume", str(found["video"]), "--cache", "--cache_dir", str(found["cache"]), "--log_dir",
        str(folder / "logs")])
    assert code == 0
    return found


@pytest.fixture
def ctx(tiny_root: Path, assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    monkeypatch.chdir(tmp_path)
    yield Ctx(tiny_root, tmp_path, assets["video"], assets["image"], assets["cache"])
    reset_script_loggers()


def test_the_table_has_at_least_60_cases() -> None:
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("script", "argv", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_input(script: str, argv: Callable[[Ctx], list[str]], expected: tuple[str, ...] | int, ctx: Ctx,
                   capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(script, argv(ctx), capsys)
    if isinstance(expected, int):
        assert code == 0, err
        warnings = [line for line in (out + err).splitlines() if line.startswith("warning:")]
        assert len(warnings) == expected, out
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert not (ctx.work / "pwned").exists()


def test_the_edge_table_has_at_least_25_cases() -> None:
    assert len(EDGE_CASES) >= 25 and len({case[0] for case in CASES + EDGE_CASES}) == len(CASES) + len(EDGE_CASES)


@pytest.mark.parametrize(("script", "argv", "expected"), [case[1:] for case in EDGE_CASES],
                         ids=[c[0] for c in EDGE_CASES])
def test_edge_input(script: str, argv: Callable[[Ctx], list[str]], expected: tuple[str, ...] | int, ctx: Ctx,
                    capsys: pytest.CaptureFixture) -> None:
    test_bad_input(script, argv, expected, ctx, capsys)



def test_a_byte_order_mark_never_becomes_part_of_a_sentence(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run("ground", phrases_file(ctx, BOM + b"the triangle left of the square\r\n"), capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (ctx.work / "o.jsonl").read_text().splitlines()]
    assert {r["sentence"] for r in records} == {"the triangle left of the square"}


def test_the_warnings_name_only_the_tokens_read_each_once(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    """--time 6 reads 'zebra the zebra triangle left of': zebra is unknown (once); 'yak' and 'square' are cut."""
    argv = ground_with(ctx, "--out_jsonl", "o.jsonl", "--time", "6", "--phrase", "zebra the zebra triangle left of "
                       "the square yak")
    code, _, err = run("ground", argv, capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 2, err
    assert "its last 3 token(s) are past --time 6" in warnings[0]
    assert warnings[1].endswith(": zebra not in the vocabulary (read as <unk>)")


def test_a_model_that_gives_a_non_finite_box_writes_nothing(ctx: Ctx) -> None:
    from app.grounder import Grounder, read_frames
    grounder = Grounder.from_checkpoint(ctx.video_ckpt, corpus=ctx.root / "VID" / "corpus.pth", cfg=SMALL_CFG,
                                        size=64, emb_size=EMB)
    with torch.no_grad():
        next(grounder.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite box"):
        list(grounder.ground(read_frames([ctx.root / "frames" / "test" / "vid_00000"]), ["the triangle"]))


def test_the_test_script_takes_the_checkpoints_stored_settings(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    """Without --size and --anchor_imsize, a checkpoint trained at 64 px with anchors in 64-px units is evaluated
    so: the same predictions as with both flags given."""
    ckpt = str(ckpt_with(ctx, "s.pth", with_inference(size=64, anchor_imsize=64)))
    bare = [a for a in ctx.model() if a not in ("--size", "64")]
    assert run("test_video", [*bare, "--test", "--resume", ckpt, "--save_pred", "a.jsonl"], capsys)[0] == 0
    assert run("test_video", [*ctx.model(), "--test", "--resume", ckpt, "--anchor_imsize", "64", "--save_pred",
                              "b.jsonl"], capsys)[0] == 0
    assert run("test_video", [*ctx.model(), "--test", "--resume", ckpt, "--save_pred", "c.jsonl"], capsys)[0] == 0
    assert (ctx.work / "a.jsonl").read_text() == (ctx.work / "b.jsonl").read_text()
    assert (ctx.work / "a.jsonl").read_text() == (ctx.work / "c.jsonl").read_text()


def test_mixed_frame_sizes_give_every_output_every_frame(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    """One rule: JSON Lines boxes in each frame's own pixels; the video and the GIF at the first frame's size,
    the frame of another size fitted in (not cropped, not refused)."""
    from PIL import Image
    folder = mixed_sizes(ctx)
    frames = sorted(Path(folder).iterdir())
    code, _, err = run("ground", ground_with(ctx, "--out_jsonl", "o.jsonl", "--out_video", "o.mp4", "--out_gif",
                                             "o.gif", inputs=[folder]), capsys)
    assert code == 0, err
    first = cv2.imread(str(frames[0])).shape
    records = [json.loads(line) for line in (ctx.work / "o.jsonl").read_text().splitlines()]
    assert len(records) == len(frames)
    with Image.open(ctx.work / "o.gif") as gif:
        assert gif.n_frames == len(frames) and gif.size == ((first[1] + 1) // 2, (first[0] + 1) // 2)
    capture = cv2.VideoCapture(str(ctx.work / "o.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == len(frames)


def test_a_video_that_cannot_be_decoded_prints_only_our_line(ctx: Ctx, capfd: pytest.CaptureFixture) -> None:
    argv = ground_with(ctx, "--out_jsonl", "o.jsonl", inputs=[str(video_file(ctx, truncate=True))])
    code = run_main(ground.main, ground.get_args_parser(), argv)
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: video "), err

def test_a_cache_without_manifest_is_used_with_a_note(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    """The authors' published cache folders have no manifest: post-processing uses them and says so."""
    code, out, _ = run("post", ctx.post(_no_manifest_cache(ctx)), capsys)
    assert code == 0
    assert "has no .cache_manifest.json (e.g. the authors' published cache)" in out


# ==== outputs that are inputs or each other, outputs another run is writing, Ctrl-C and SIGTERM
# (docs/behaviour.md §10: one rule for every entry point; --overwrite never allows a collision)

def clip_video(ctx: Ctx) -> Path:
    """The first test clip as an MP4 file in the working folder."""
    frames = sorted((ctx.root / "frames" / "test" / "vid_00000").iterdir())
    first = cv2.imread(str(frames[0]))
    path = ctx.work / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (first.shape[1], first.shape[0]))
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    return path


def linked(ctx: Ctx, target: Path, name: str) -> Path:
    link = ctx.work / name
    link.symlink_to(target)
    return link


def copied_frames(ctx: Ctx) -> Path:
    return Path(shutil.copytree(ctx.root / "frames" / "test" / "vid_00000", ctx.work / "clip"))


def ground_on(ctx: Ctx, source: Path | str) -> list[str]:
    return [str(source), *ctx.ground()[1:]]


def copied_root(ctx: Ctx) -> Path:
    """A copy of the tiny set (data and split root) that a case may name as an output's neighbour."""
    return Path(shutil.copytree(ctx.root, ctx.work / "data", symlinks=True))


def data_in(root: Path, dataset: str = "VID") -> list[str]:
    return ["--data_root", str(root), "--split_root", str(root), "--dataset", dataset]


PathCase = tuple[str, str, Callable[[Ctx], list[str]], tuple[str, ...]]
PATH_CASES: list[PathCase] = [
    # ---- ground.py: an output is an input (--overwrite given: it never allows this)
    ("ground_out_video_is_the_input_video", "ground",
     lambda c: [*ground_on(c, clip_video(c)), "--out_video", str(c.work / "clip.mp4"), "--overwrite"],
     ("--out_video", "inputs")),
    ("ground_out_video_is_the_input_through_a_symlink", "ground",
     lambda c: [*ground_on(c, clip_video(c)), "--out_video", str(linked(c, c.work / "clip.mp4", "l.mp4")),
                "--overwrite"], ("--out_video", "inputs")),
    ("ground_out_jsonl_in_the_frames_folder", "ground",
     lambda c: [*ground_on(c, copied_frames(c)), "--out_jsonl", str(c.work / "clip" / "boxes.jsonl")],
     ("--out_jsonl", "inputs")),
    ("ground_out_gif_in_the_frames_folder_via_a_symlink", "ground",
     lambda c: [*ground_on(c, linked(c, copied_frames(c), "frames_link")), "--out_gif",
                str(c.work / "clip" / "a.gif")], ("--out_gif", "inputs")),
    ("ground_out_jsonl_is_the_checkpoint", "ground",
     lambda c: [*c.ground(), "--resume", str(shutil.copy(c.video_ckpt, c.work / "m.pth")), "--out_jsonl",
                str(c.work / "m.pth"), "--overwrite"], ("--out_jsonl", "--resume")),
    ("ground_out_jsonl_is_the_phrases_file", "ground",
     lambda c: [*c.ground(), "--phrases", str(c.file("p.txt", b"the red square\n")), "--out_jsonl", "p.txt",
                "--overwrite"], ("--out_jsonl", "--phrases")),
    ("ground_out_jsonl_is_the_corpus", "ground",
     lambda c: [*c.ground(), "--corpus", str(shutil.copy(c.root / "VID" / "corpus.pth", c.work / "c.pth")),
                "--out_jsonl", "c.pth", "--overwrite"], ("--out_jsonl", "--corpus")),
    ("ground_out_jsonl_is_an_input_image", "ground",
     lambda c: [str(shutil.copy(sorted(copied_frames(c).iterdir())[0], c.work / "a.jpg")), *c.ground()[1:],
                "--out_jsonl", "a.jpg", "--overwrite"], ("--out_jsonl", "inputs")),
    # ---- ground.py: two outputs on one path
    ("ground_out_jsonl_is_out_video", "ground",
     lambda c: [*c.ground(), "--out_jsonl", "same.mkv", "--out_video", "same.mkv"], ("--out_jsonl", "--out_video")),
    ("ground_out_gif_is_out_jsonl_through_a_symlink", "ground",
     lambda c: [*c.ground(), "--out_jsonl", "o.gif", "--out_gif", str(linked(c, c.work / "o.gif", "l.gif"))],
     ("--out_jsonl", "--out_gif")),
    # ---- the test script
    ("cache_dir_is_save_plot", "test_video",
     lambda c: [*c.test(), "--cache", "--cache_dir", "D", "--save_plot", "D"], ("--cache_dir", "--save_plot")),
    ("save_pred_in_cache_dir", "test_video",
     lambda c: [*c.test(), "--cache", "--cache_dir", "D", "--save_pred", "D/p.jsonl"], ("--save_pred", "--cache_dir")),
    ("save_plot_in_cache_dir", "test_video",
     lambda c: [*c.test(), "--cache", "--cache_dir", "D", "--save_plot", "D/plots"], ("--save_plot", "--cache_dir")),
    ("cache_dir_is_the_data_root", "test_video",
     lambda c: [*c.test(), *data_in(copied_root(c)), "--cache", "--cache_dir", "data", "--overwrite"],
     ("--cache_dir", "--data_root")),
    ("cache_dir_holds_the_checkpoint", "test_video",
     lambda c: [*c.test(), "--resume", str(shutil.copy(c.video_ckpt, c.file("D/m.pth"))), "--cache", "--cache_dir",
                "D", "--overwrite"], ("--cache_dir", "--resume")),
    ("save_pred_is_the_checkpoint", "test_video",
     lambda c: [*c.test(), "--resume", str(shutil.copy(c.video_ckpt, c.work / "m.pth")), "--save_pred", "m.pth",
                "--overwrite"], ("--save_pred", "--resume")),
    ("save_pred_is_the_corpus", "test_video",
     lambda c: [*c.test(), "--corpus", str(shutil.copy(c.root / "VID" / "corpus.pth", c.work / "c.pth")),
                "--save_pred", "c.pth", "--overwrite"], ("--save_pred", "--corpus")),
    ("save_plot_in_the_data_root", "test_video",
     lambda c: [*c.test(), *data_in(copied_root(c)), "--save_plot", "data/frames/plots"],
     ("--save_plot", "--data_root")),
    ("log_dir_is_the_index_folder", "test_video",
     lambda c: [*c.test(), *data_in(copied_root(c)), "--log_dir", "data/VID"], ("--log_dir", "--split_root")),
    # ---- training
    ("checkpoint_is_the_pretrain_file", "train_video",
     lambda c: [*c.train(), "--save_dir", "ckpts", "--pretrain",
                str(shutil.copy(c.video_ckpt, c.file("ckpts/case_model_best.pth.tar"))), "--overwrite"],
     ("--save_dir", "--pretrain")),
    ("save_dir_in_the_data_root", "train_image",
     lambda c: [*c.train("synthvid"), *data_in(copied_root(c), "synthvid"), "--save_dir", "data/ckpts"],
     ("--save_dir", "--data_root")),
    ("log_dir_in_the_index_folder_training", "train_video",
     lambda c: [*c.train(), *data_in(copied_root(c)), "--log_dir", "data/VID/logs"], ("--log_dir", "--split_root")),
    # ---- post-processing
    ("post_save_pred_in_cache_dir", "post",
     lambda c: [*c.post(c.copied_cache()), "--save_pred", "cache/p.jsonl"], ("--save_pred", "--cache_dir")),
    ("post_save_plot_is_cache_dir", "post",
     lambda c: [*c.post(c.copied_cache()), "--save_plot", "cache", "--overwrite"], ("--save_plot", "--cache_dir")),
    ("post_log_dir_is_cache_dir", "post",
     lambda c: [*c.post(c.copied_cache()), "--log_dir", "cache"], ("--log_dir", "--cache_dir")),
    ("post_save_pred_is_save_plot", "post",
     lambda c: [*c.post(), "--save_pred", "x", "--save_plot", "x"], ("--save_pred", "--save_plot")),
    # ---- tools
    ("build_vid_out_in_the_annotations", "build_vid",
     lambda c: [*vid_sentence_root(c, "[1, 2, 30, 40]"), "--out", str(c.work / "vs" / "out")],
     ("--out", "--vid_sentence_root")),
    ("build_vid_out_corpus_is_the_corpus", "build_vid",
     lambda c: [*vid_sentence_root(c, "[1, 2, 30, 40]"), "--corpus",
                str(shutil.copy(c.root / "VID" / "corpus.pth", c.file("out/corpus.pth"))), "--force"],
     ("--out", "--corpus")),
    ("build_refcoco_out_in_refer_root", "build_refcoco",
     lambda c: ["--refer_root", refer_root(c, []), "--dataset", "unc", "--out", str(c.work / "refer" / "unc")],
     ("--out", "--refer_root")),
]


def lock_beside(path: Path) -> int:
    """Hold the advisory lock of output ``path`` as another run writing it would; returns the descriptor."""
    import fcntl  # POSIX only, as the locks

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


LOCK_CASES: list[PathCase] = [
    ("ground_out_jsonl_being_written", "ground",
     lambda c: [*c.ground(), "--out_jsonl", "o.jsonl"], ("--out_jsonl", "another run")),
    ("ground_out_video_being_written", "ground",
     lambda c: [*c.ground(), "--out_video", "o.mp4", "--overwrite"], ("--out_video", "another run")),
    ("ground_out_gif_being_written", "ground",
     lambda c: [*c.ground(), "--out_gif", "o.gif"], ("--out_gif", "another run")),
    ("cache_dir_being_written", "test_video",
     lambda c: [*c.test(), "--cache", "--cache_dir", "D"], ("--cache_dir", "another run")),
    ("save_pred_being_written", "test_video",
     lambda c: [*c.test(), "--save_pred", "p.jsonl"], ("--save_pred", "another run")),
    ("checkpoint_being_written", "train_video",
     lambda c: [*c.train(), "--save_dir", "ckpts"], ("--save_dir", "another run")),
    ("post_save_plot_being_written", "post",
     lambda c: [*c.post(), "--save_plot", "plots"], ("--save_plot", "another run")),
    ("synthvid_out_being_written", "synthvid",
     lambda c: ["--out", "sv", "--train_videos", "1", "--val_videos", "1", "--test_videos", "1"],
     ("--out", "another run")),
]
LOCKED = {"ground_out_jsonl_being_written": "o.jsonl", "ground_out_video_being_written": "o.mp4",
          "ground_out_gif_being_written": "o.gif", "cache_dir_being_written": "D",
          "save_pred_being_written": "p.jsonl", "checkpoint_being_written": "ckpts/case_checkpoint.pth.tar",
          "post_save_plot_being_written": "plots", "synthvid_out_being_written": "sv"}


def test_the_path_and_lock_tables_have_their_cases() -> None:
    assert len(PATH_CASES) + len(LOCK_CASES) >= 35
    assert len({c[0] for c in PATH_CASES + LOCK_CASES} | {c[0] for c in CASES}) == len(PATH_CASES + LOCK_CASES + CASES)


def refused(code: object, err: str, expected: tuple[str, ...], work: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert [p.name for p in work.rglob("*.tmp")] == []


@pytest.mark.parametrize(("script", "argv", "expected"), [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES])
def test_an_output_is_never_an_input_or_another_output(script: str, argv: Callable[[Ctx], list[str]],
                                                       expected: tuple[str, ...], ctx: Ctx,
                                                       capsys: pytest.CaptureFixture) -> None:
    args = argv(ctx)
    before = {p: p.read_bytes() for p in ctx.work.rglob("*") if p.is_file() and not p.is_symlink()}
    code, _, err = run(script, args, capsys)
    refused(code, err, expected, ctx.work)
    assert {p: p.read_bytes() for p in before} == before  # nothing replaced


@pytest.mark.parametrize(("script", "argv", "expected"), [c[1:] for c in LOCK_CASES], ids=[c[0] for c in LOCK_CASES])
def test_an_output_another_run_is_writing_is_refused(script: str, argv: Callable[[Ctx], list[str]],
                                                     expected: tuple[str, ...], ctx: Ctx,
                                                     capsys: pytest.CaptureFixture,
                                                     request: pytest.FixtureRequest) -> None:
    fd = lock_beside(ctx.work / LOCKED[request.node.callspec.id])
    try:
        code, _, err = run(script, argv(ctx), capsys)
    finally:
        os.close(fd)
    refused(code, err, expected, ctx.work)
    assert not (ctx.work / LOCKED[request.node.callspec.id]).exists()


def interrupt_when(condition: Callable[[], bool]) -> Callable:
    """A replacement ``Darknet.forward`` that raises KeyboardInterrupt (Ctrl-C) once ``condition()`` holds."""
    from model.darknet import Darknet

    forward = Darknet.forward

    def interrupted(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
        if condition():
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)
    return interrupted


def interrupt_at_load(count: int) -> Callable:
    """A replacement ``torch.load`` that raises KeyboardInterrupt at its ``count``-th call."""
    load, calls = torch.load, []

    def interrupted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == count:
            raise KeyboardInterrupt
        return load(*args, **kwargs)
    return interrupted


def always() -> bool:
    return True


def raise_interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


# (id, script, argv, (what to replace, its replacement) of the context, fragments of the one line)
InterruptCase = tuple[str, str, Callable[[Ctx], list[str]], Callable[[Ctx], tuple[str, Callable]], tuple[str, ...]]
INTERRUPT_CASES: list[InterruptCase] = [
    ("train_video_first_epoch", "train_video", lambda c: [*c.train(), "--save_dir", "ckpts"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(always)), ("nothing was written",)),
    ("train_video_second_epoch", "train_video", lambda c: [*c.train(), "--save_dir", "ckpts", "--nb_epoch", "2"],
     lambda c: ("model.darknet.Darknet.forward",
                interrupt_when(lambda: (c.work / "ckpts" / "case_checkpoint.pth.tar").exists())),
     ("kept", "case_checkpoint.pth.tar")),
    ("train_image_first_epoch", "train_image", lambda c: [*c.train("synthvid"), "--save_dir", "ckpts"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(always)), ("nothing was written",)),
    ("test_video_while_caching", "test_video",
     lambda c: [*c.test(), "--cache", "--cache_dir", str(c.copied_cache()), "--overwrite"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(lambda: bool(list(c.work.glob(".cache.*.tmp/*"))))),
     ("nothing was written",)),
    ("test_image_evaluation", "train_image", lambda c: [*c.test("synthvid"), "--save_pred", "p.jsonl"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(always)), ("nothing was written",)),
    ("post_processing_reading_the_cache", "post", lambda c: [*c.post(), "--save_pred", "p.jsonl"],
     lambda c: ("torch.load", interrupt_at_load(6)), ("nothing was written",)),
    ("ground_first_window", "ground",
     lambda c: [*c.ground(), "--out_jsonl", str(c.file("o.jsonl")), "--out_gif", "o.gif", "--overwrite"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(always)), ("nothing was written",)),
    ("ground_video_input", "ground",
     lambda c: [*ground_on(c, clip_video(c)), "--out_video", "o.mp4"],
     lambda c: ("model.darknet.Darknet.forward", interrupt_when(always)), ("nothing was written",)),
    ("build_vid_sentence_reading", "build_vid", lambda c: vid_sentence_root(c, "[1, 2, 30, 40]"),
     lambda c: ("tools.build_vid_sentence.build_split", raise_interrupt), ("nothing was written",)),
    ("synthvid_generating", "synthvid",
     lambda c: ["--out", "sv", "--train_videos", "1", "--val_videos", "1", "--test_videos", "1", "--workers", "1"],
     lambda c: ("dataset.synthvid.writer.make_clip", raise_interrupt), ("nothing was written",)),
    ("detect_forward", "detect",
     lambda c: ["--cfg", str(SMALL_CFG), "--weights", str(write_darknet_weights(Darknet(SMALL_CFG), c.work / "w")),
                "--image",
                str(sorted((c.root / "frames" / "test" / "vid_00000").iterdir())[0])],
     lambda c: ("tools.detect.detect", raise_interrupt), ("nothing was written",)),
]


@pytest.mark.parametrize(("script", "argv", "patch", "expected"), [c[1:] for c in INTERRUPT_CASES],
                         ids=[c[0] for c in INTERRUPT_CASES])
def test_ctrl_c_says_what_was_kept_and_exits_130(script: str, argv: Callable[[Ctx], list[str]],
                                                 patch: Callable[[Ctx], tuple[str, Callable]],
                                                 expected: tuple[str, ...], ctx: Ctx, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = argv(ctx)
    before = {p: p.read_bytes() for p in ctx.work.rglob("*") if p.is_file() and not p.is_symlink()}
    monkeypatch.setattr(*patch(ctx))
    try:
        code, _, err = run(script, args, capsys)
    except KeyboardInterrupt:
        code, err = "KeyboardInterrupt", ""
    monkeypatch.undo()
    lines = err.strip().splitlines()
    assert code == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), (code, err)
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert [p.name for p in ctx.work.rglob(".*.tmp")] == []
    assert [p.name for p in ctx.work.rglob(".*.lock")] == []
    for path, data in before.items():  # every earlier file is unchanged: the old complete version
        assert path.read_bytes() == data, path



# ==== a cache manifest that identifies its cache: what it was written from, and each file's content

def cache_with_old_manifest(ctx: Ctx) -> Path:
    """A cache whose manifest has the older form (count, names digest and time span, no content hashes)."""
    cache = ctx.copied_cache()
    files = sorted(cache.glob("*/*.pth"))
    names = "\n".join(p.relative_to(cache).as_posix() for p in files)
    (cache / MANIFEST).write_text(json.dumps({"files": len(files), "names_sha256": hashlib.sha256(names.encode())
                                              .hexdigest(), "started": 0.0, "finished": time.time() + 60}))
    return cache


def cache_file_replaced_keeping_its_size(ctx: Ctx) -> Path:
    """One float of one cache file changed in place (same size, same modification time)."""
    cache = ctx.copied_cache()
    first = sorted(cache.glob("*/*.pth"))[0]
    stat = first.stat()
    entry = torch.load(first, weights_only=True)
    entry["pred_score_topk"][0] = float(entry["pred_score_topk"][0]) * 0.5
    torch.save(entry, first)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return cache


MANIFEST_CASES: list[PathCase] = [
    ("cache_file_copied_over_another_frame", "post", lambda c: c.post(foreign_file_cache(c)),
     ("not the output of one run", "content differs")),
    ("cache_file_edited_in_place", "post", lambda c: c.post(cache_file_replaced_keeping_its_size(c)),
     ("not the output of one run", "content differs")),
    ("cache_of_another_size", "post", lambda c: [*c.post(), "--size", "96"], ("--size", "64", "96")),
    ("cache_of_another_split", "post", lambda c: [*c.post(), "--test_split", "val"], ("split", "'test'", "'val'")),
    ("cache_of_another_index", "post", lambda c: [*c.post(), *c.video_index(set_phrase("the square"))],
     ("index file", "VID_video_level_test.pth")),
]


@pytest.mark.parametrize(("script", "argv", "expected"), [c[1:] for c in MANIFEST_CASES],
                         ids=[c[0] for c in MANIFEST_CASES])
def test_a_cache_is_used_only_for_what_it_was_written_from(script: str, argv: Callable[[Ctx], list[str]],
                                                           expected: tuple[str, ...], ctx: Ctx,
                                                           capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(script, argv(ctx), capsys)
    refused(code, err, expected, ctx.work)


def test_the_manifest_records_the_source_and_a_hash_per_file(ctx: Ctx) -> None:
    manifest = json.loads((ctx.cache / MANIFEST).read_text())
    index = ctx.root / "VID" / "VID_video_level_test.pth"
    assert manifest["source"] == {"dataset": "VID", "split": "test", "size": 64,
                                  "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest(),
                                  "checkpoint_sha256": hashlib.sha256(ctx.video_ckpt.read_bytes()).hexdigest()}
    files = sorted(ctx.cache.glob("*/*.pth"))
    assert manifest["files"] == {p.relative_to(ctx.cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                                 for p in files}


def test_a_cache_with_an_older_manifest_is_used_with_a_note(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run("post", ctx.post(cache_with_old_manifest(ctx)), capsys)
    assert code == 0, err
    assert "records no content hashes" in out
