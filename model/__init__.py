"""Grounding models (SL-Att image model, CG-SL-Att video model) and their Darknet backbone.

The exports are resolved lazily (PEP 562) so that ``python -m model.darknet`` does not import
``model.darknet`` once as a package member and again as ``__main__``.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

MODEL_KINDS = ("image", "video")
DEFAULT_CFG = Path(__file__).with_name("yolov3.cfg")  # the reference cfg (byte-for-byte, never edited)
SMALL_CFG = Path(__file__).with_name("yolov3_small.cfg")  # small cfg for CPU training
_EXPORTS = {
    "CoGroundingModel": "model.cogrounding",
    "Darknet": "model.darknet",
    "GroundingModel": "model.grounding",
    "parse_cfg": "model.darknet",
}
__all__ = ["DEFAULT_CFG", "MODEL_KINDS", "SMALL_CFG", "build_grounding_model", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")


def build_grounding_model(
    kind: str,
    vocab_size: int,
    cfg_path: str | os.PathLike = DEFAULT_CFG,
    image_size: int = 256,
    emb_size: int = 512,
    light: bool = False,
) -> Any:
    """The image model (``kind='image'``, SL-Att) or the video model (``kind='video'``, CG-SL-Att)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    from model.cogrounding import CoGroundingModel
    from model.grounding import GroundingModel

    cls = GroundingModel if kind == "image" else CoGroundingModel
    return cls(vocab_size, cfg_path=cfg_path, image_size=image_size, emb_size=emb_size, light=light)
