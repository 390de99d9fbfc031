"""Grounding models (SL-Att image model, CG-SL-Att video model) and their Darknet backbone."""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from model.cogrounding import CoGroundingModel
from model.darknet import DEFAULT_CFG, SMALL_CFG, TINY_CFG, Darknet, parse_cfg
from model.grounding import GroundingModel
from utils.checkpoint import MODULE_PREFIX

MODEL_KINDS = ("image", "video")
VIDEO_ONLY_PREFIX = "corr_conv."  # the co-grounding layers: only the video model (CG-SL-Att) has them
__all__ = ["DEFAULT_CFG", "MODEL_KINDS", "SMALL_CFG", "TINY_CFG", "CoGroundingModel", "Darknet", "GroundingModel",
           "build_grounding_model", "model_kind", "parse_cfg"]


def build_grounding_model(
    kind: str,
    vocab_size: int,
    cfg_path: str | os.PathLike = DEFAULT_CFG,
    image_size: int = 256,
    emb_size: int = 512,
    light: bool = False,
) -> GroundingModel:
    """The image model (``kind='image'``, SL-Att) or the video model (``kind='video'``, CG-SL-Att)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    cls = GroundingModel if kind == "image" else CoGroundingModel
    return cls(vocab_size, cfg_path=cfg_path, image_size=image_size, emb_size=emb_size, light=light)


def model_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'video' (CG-SL-Att) if the weights hold the co-grounding layers, else 'image' (SL-Att)."""
    video = any(k.removeprefix(MODULE_PREFIX).startswith(VIDEO_ONLY_PREFIX) for k in state_dict)
    return "video" if video else "image"
