"""Data-loading throughput per worker: our VIDDataset pipelines against the reference's per-sample path.

Writes synthetic JPEG videos of realistic frame sizes to a temporary folder, then times (single process, one
thread for OpenCV and torch, i.e. what one DataLoader worker gets):

- train pairs: ``VIDDataset(num_frames=2, augment=True)`` (flip, HSV, letterbox, affine) at 256 px;
- eval windows: ``VIDDataset(num_frames=5)``, each frame decoded once per window that contains it (5 times);
- eval frames: ``VIDDataset.sequence_frames()``, each frame decoded once (for the streaming evaluator);
- the same three through a faithful re-implementation of the reference's per-sample code (per-frame
  torchvision ``ToTensor``/``Normalize``, int boxes, two HSV conversions; its evaluator only had windows).

"video frames/s" counts samples (every frame of a video is one sample), "images/s" counts decoded images.
Run: ``python -m bench.dataloading [--seconds 3] [--sizes 500x375 1280x720]``. Not a test.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
import torchvision.transforms as tvt

from dataset.vid_loader import VIDDataset
from utils.letterbox import PAD_COLOR
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.windows import window_indices
from utils.word_utils import build_corpus, save_corpus

PHRASE = "the brown dog on the left of the car"


def write_videos(root: Path, width: int, height: int, num_videos: int, num_frames: int, seed: int) -> None:
    """Smooth random scenes plus sensor-like noise, JPEG quality 90 (decode cost close to real footage)."""
    rng = np.random.default_rng(seed)
    index = []
    for v in range(num_videos):
        scene = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (width + 64, height),
                           interpolation=cv2.INTER_CUBIC)
        video = []
        for t in range(num_frames):
            frame = scene[:, 2 * t: 2 * t + width].astype(np.int16) + rng.normal(0, 8, (height, width, 3))
            rel = f"Data/VID/{width}x{height}_{v:03d}/{t:06d}.JPEG"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), np.clip(frame, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
            box = [width * 0.2 + t, height * 0.3, width * 0.6 + t, height * 0.8]
            video.append((rel, box, PHRASE))
        index.append(video)
    (root / "split" / "VID").mkdir(parents=True, exist_ok=True)
    torch.save(index, root / "split" / "VID" / "VID_video_level_test.pth")
    save_corpus(build_corpus([PHRASE]), root / "split" / "VID" / "corpus.pth")


# ---- the reference's per-sample path (bench only) -------------------------------------------------------

def ref_letterbox(img, height, color=PAD_COLOR):
    shape = img.shape[:2]
    ratio = float(height) / max(shape)
    new_shape = (round(shape[1] * ratio), round(shape[0] * ratio))
    dw, dh = (height - new_shape[0]) / 2, (height - new_shape[1]) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.resize(img, new_shape, interpolation=cv2.INTER_AREA)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratio, dw, dh


def ref_random_affine(img, targets, degrees=(-5, 5), translate=(0.10, 0.10), scale=(0.90, 1.10), shear=(-2, 2),
                      border_value=PAD_COLOR):
    height = max(img.shape[0], img.shape[1])
    rot = np.eye(3)
    a = random.random() * (degrees[1] - degrees[0]) + degrees[0]
    s = random.random() * (scale[1] - scale[0]) + scale[0]
    rot[:2] = cv2.getRotationMatrix2D(angle=a, center=(img.shape[1] / 2, img.shape[0] / 2), scale=s)
    shift = np.eye(3)
    shift[0, 2] = (random.random() * 2 - 1) * translate[0] * img.shape[0]
    shift[1, 2] = (random.random() * 2 - 1) * translate[1] * img.shape[1]
    skew = np.eye(3)
    skew[0, 1] = math.tan((random.random() * (shear[1] - shear[0]) + shear[0]) * math.pi / 180)
    skew[1, 0] = math.tan((random.random() * (shear[1] - shear[0]) + shear[0]) * math.pi / 180)
    m = skew @ shift @ rot
    imw = cv2.warpPerspective(img, m, dsize=(height, height), flags=cv2.INTER_LINEAR, borderValue=border_value)
    points = targets.copy()
    xy = np.ones((4, 3))
    xy[:, :2] = points[[0, 1, 2, 3, 0, 3, 2, 1]].reshape(4, 2)
    xy = (xy @ m.T)[:, :2].reshape(1, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    xy = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, 1).T
    radians = a * math.pi / 180
    reduction = max(abs(math.sin(radians)), abs(math.cos(radians))) ** 0.5
    x, y = (xy[:, 2] + xy[:, 0]) / 2, (xy[:, 3] + xy[:, 1]) / 2
    w, h = (xy[:, 2] - xy[:, 0]) * reduction, (xy[:, 3] - xy[:, 1]) * reduction
    xy = np.concatenate((x - w / 2, y - h / 2, x + w / 2, y + h / 2)).reshape(4, 1).T
    np.clip(xy, 0, height, out=xy)
    return imw, xy[0]


class ReferencePipeline:
    """The reference __getitem__ for a k-frame window: every frame read and transformed on its own."""

    def __init__(self, videos, k: int, augment: bool, size: int = 256) -> None:
        self.videos, self.k, self.augment, self.size = videos, k, augment, size
        self.samples = [(v, t) for v, video in enumerate(videos) for t in range(len(video))]
        self.transform = tvt.Compose([tvt.ToTensor(), tvt.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, path, bbox, phrase, flip):
        img = cv2.imread(path)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.shape[-1] > 1 else np.stack([img] * 3)
        bbox = np.array(bbox, dtype=int)
        phrase = phrase.lower()
        w = img.shape[1]
        if self.augment:
            if flip:
                img = cv2.flip(img, 1)
                bbox[0], bbox[2] = w - bbox[2] - 1, w - bbox[0] - 1
                phrase = phrase.replace("right", "*&^special^&*").replace("left", "right").replace(
                    "*&^special^&*", "left")
            img_hsv = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), cv2.COLOR_BGR2HSV)
            sat = img_hsv[:, :, 1].astype(np.float32)
            val = img_hsv[:, :, 2].astype(np.float32)
            a = (random.random() * 2 - 1) * 0.5 + 1
            if a > 1:
                np.clip(sat, a_min=0, a_max=255, out=sat)
            a = (random.random() * 2 - 1) * 0.5 + 1
            val *= a
            if a > 1:
                np.clip(val, a_min=0, a_max=255, out=val)
            img_hsv[:, :, 1] = sat.astype(np.uint8)
            img_hsv[:, :, 2] = val.astype(np.uint8)
            img = cv2.cvtColor(cv2.cvtColor(img_hsv, cv2.COLOR_HSV2BGR), cv2.COLOR_BGR2RGB)
        img, ratio, dw, dh = ref_letterbox(img, self.size)
        bbox[0], bbox[2] = bbox[0] * ratio + dw, bbox[2] * ratio + dw
        bbox[1], bbox[3] = bbox[1] * ratio + dh, bbox[3] * ratio + dh
        if self.augment:
            img, bbox = ref_random_affine(img, bbox)
        return self.transform(img), np.array(bbox, dtype=np.float32)

    def __getitem__(self, index: int):
        v, t = self.samples[index]
        video = self.videos[v]
        flip = self.augment and random.random() > 0.5
        frames = [self.frame(*video[j], flip) for j in window_indices(t, len(video), self.k)]
        return torch.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


# ---- timing ---------------------------------------------------------------------------------------------

def samples_per_second(dataset, seconds: float, rounds: int = 3) -> float:
    """Best samples/s of ``rounds`` timed passes (each whole passes over the dataset for ``seconds / rounds``).

    The best round is reported because other processes on a shared machine only ever slow a round down.
    """
    dataset[0]  # warm-up
    best = 0.0
    for _ in range(rounds):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            for i in range(len(dataset)):
                dataset[i]
            done += len(dataset)
        best = max(best, done / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["500x375", "1280x720"], help="frame sizes WxH")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--seconds", type=float, default=6.0, help="time budget per measurement (3 rounds)")
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    random.seed(13)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({cpus} usable); "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, OpenCV {cv2.__version__}, "
          f"numpy {np.__version__}; one thread (= one DataLoader worker)")
    header = f"{'pipeline':<34}{'frame':>10}{'video frames/s':>16}{'images/s':>10}{'ms/sample':>11}"
    print(header)
    print("-" * len(header))
    cwd = os.getcwd()
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_videos(root, width, height, args.videos, args.frames, seed=width)
            os.chdir(root)  # index paths are relative to the cwd, as in the reference
            try:
                corpus = build_corpus([PHRASE])
                pairs = VIDDataset(root, root / "split", "VID", "test", corpus, args.image_size, num_frames=2,
                                   augment=True)
                windows = VIDDataset(root, root / "split", "VID", "test", corpus, args.image_size, num_frames=5)
                rows = [
                    ("ours: train pairs (augment)", pairs, 2),
                    ("ours: eval 5-frame windows", windows, 5),
                    ("ours: eval per-frame (streaming)", windows.sequence_frames(range(len(windows.videos))), 1),
                    ("reference: train pairs (augment)", ReferencePipeline(pairs.videos, 2, True, args.image_size), 2),
                    ("reference: eval 5-frame windows", ReferencePipeline(pairs.videos, 5, False, args.image_size),
                     5),
                ]
                for name, dataset, decodes in rows:
                    rate = samples_per_second(dataset, args.seconds)
                    print(f"{name:<34}{size:>10}{rate:>16.1f}{rate * decodes:>10.1f}{1000 / rate:>11.2f}")
            finally:
                os.chdir(cwd)


if __name__ == "__main__":
    main()
