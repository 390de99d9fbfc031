"""Run a Darknet cfg + ``.weights`` (e.g. yolov3-tiny) as a plain YOLO detector on one image.

    python -m tools.detect --cfg yolov3-tiny.cfg --weights yolov3-tiny.weights --image img.jpg --names coco.names

Prints the top detections, best first: class, objectness x class probability, box x1 y1 x2 y2 in pixels.
Preprocessing is OpenCV ``blobFromImage``'s by default (the tests compare with OpenCV's Darknet importer), or the
grounding letterbox (``--letterbox``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from app.argparser import image_size
from dataset.common import check_image_file
from model.darknet import Darknet, YoloHead
from utils.box_ops import xywh2xyxy
from utils.cli import ArgumentParser, positive_int, run_main
from utils.io import UserInputError, read_text
from utils.letterbox import letterbox as letterbox_image
from utils.letterbox import unletterbox_boxes

NMS_IOU = 0.45


def decode_yolo(
    raw: torch.Tensor, head: YoloHead, input_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standard YOLOv3 decoding of one raw map (B, A * (5 + C), h, w).

    Returns boxes (B, A*h*w, 4) as (cx, cy, w, h) fractions of the input, objectness (B, A*h*w) and class
    probabilities (B, A*h*w, C), all sigmoid-activated (anchor-major, then row, then column).
    """
    b, _, h, w = raw.shape
    a = head.anchors.shape[0]
    p = raw.view(b, a, 5 + head.classes, h, w).permute(0, 1, 3, 4, 2).float()  # (B, A, h, w, 5 + C)
    gy, gx = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
    anchors = head.anchors.to(raw.device).view(1, a, 1, 1, 2) / torch.tensor(
        [input_size[1], input_size[0]], device=raw.device
    )  # (1, A, 1, 1, 2) fractions of the input
    cx = (p[..., 0].sigmoid() + gx) / w
    cy = (p[..., 1].sigmoid() + gy) / h
    wh = p[..., 2:4].exp() * anchors  # (B, A, h, w, 2)
    boxes = torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh], dim=-1)  # (B, A, h, w, 4)
    objectness = p[..., 4].sigmoid().reshape(b, -1)  # (B, A*h*w)
    probs = p[..., 5:].sigmoid().reshape(b, -1, head.classes)  # (B, A*h*w, C)
    return boxes.reshape(b, -1, 4), objectness, probs


@dataclass(frozen=True)
class Detection:
    label: int
    score: float
    objectness: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels


@torch.no_grad()
def detect(
    model: Darknet, image_bgr: np.ndarray, size: int = 416, letterbox: bool = False, top: int = 5
) -> list[Detection]:
    """Top ``top`` detections (after class-wise NMS at IoU 0.45) of a BGR image, best first.

    Default preprocessing is OpenCV ``blobFromImage``'s: bilinear resize to ``size x size``, BGR->RGB, /255.
    ``letterbox`` uses the grounding letterbox instead (no ImageNet normalisation: Darknet weights expect /255).
    """
    h, w = image_bgr.shape[:2]
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    if letterbox:
        rgb, ratio, dw, dh = letterbox_image(rgb, size)  # letterbox of docs/behaviour.md §7, no normalisation
    else:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    param = next(model.parameters())
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(param.device, param.dtype) / 255.0  # (1, 3, S, S)
    decoded = [decode_yolo(raw, head, (size, size)) for raw, head in zip(model.forward_detect(x), model.yolo_heads)]
    boxes = torch.cat([d[0][0] for d in decoded])  # (M, 4) cx, cy, w, h fractions
    objectness = torch.cat([d[1][0] for d in decoded])  # (M,)
    probs, labels = torch.cat([d[2][0] for d in decoded]).max(dim=1)  # (M,)
    scores = objectness * probs
    xyxy = xywh2xyxy(boxes) * size  # (M, 4) input pixels
    if letterbox:
        xyxy = unletterbox_boxes(xyxy[None], *(torch.tensor([v], device=xyxy.device) for v in (ratio, dw, dh)))[0]
    else:
        xyxy = xyxy * torch.tensor([w / size, h / size, w / size, h / size])
    keep = torchvision.ops.batched_nms(xyxy, scores, labels, NMS_IOU)[:top]
    return [
        Detection(int(labels[k]), float(scores[k]), float(objectness[k]), tuple(xyxy[k].tolist())) for k in keep
    ]


def _read_names(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [line.strip() for line in read_text(path, "class names file").splitlines() if line.strip()]


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m tools.detect",
                            description="Run a Darknet cfg + .weights as a plain YOLO detector.")
    parser.add_argument("--cfg", required=True, type=Path, help="Darknet cfg file")
    parser.add_argument("--weights", required=True, type=Path, help="Darknet .weights file")
    parser.add_argument("--image", required=True, type=Path, help="image file")
    parser.add_argument("--size", type=image_size, default=416, help="network input size (multiple of 32)")
    parser.add_argument("--names", type=Path, help="class names, one per line (default: class indices)")
    parser.add_argument("--letterbox", action="store_true", help="letterbox like the grounding preprocessing")
    parser.add_argument("--top", type=positive_int, default=5, help="number of detections to print")
    return parser


def run_detector(args: argparse.Namespace) -> None:
    """Print the top detections of ``--image``, best first: class, score, box x1 y1 x2 y2 in pixels."""
    names = _read_names(args.names)
    model = Darknet(args.cfg).eval()
    model.load_darknet_weights(args.weights)
    check_image_file(args.image)
    image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if image is None:
        raise UserInputError(f"image {args.image} cannot be decoded (corrupt or not an image)")
    for det in detect(model, image, args.size, args.letterbox, args.top):
        name = names[det.label] if names and det.label < len(names) else str(det.label)
        print(f"{name} {det.score:.4f} " + " ".join(f"{v:.1f}" for v in det.box))


def main(argv: list[str] | None = None) -> int:
    return run_main(run_detector, get_args_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
