"""The optimiser and learning-rate schedule built from the command line (docs/behaviour.md §6)."""
from __future__ import annotations

import pytest
import torch

from app.builders import build_model, build_optimizer, learning_rate, set_learning_rate
from model import SMALL_CFG, build_grounding_model
from train_semantic_attention_cogrounding import get_args_parser


def test_poly_decay_per_epoch_is_the_reference_schedule():
    # lr (1 - epoch / nb_epoch) ** 0.9: 1e-4 at epoch 0, 1e-4 * 0.5 ** 0.9 half way
    assert learning_rate(1e-4, 0, 10, 0.9, 0, 0) == 1e-4
    assert learning_rate(1e-4, 5, 10, 0.9, 500, 0) == pytest.approx(1e-4 * 0.5 ** 0.9)
    assert learning_rate(1e-4, 3, 10, 0.0, 300, 0) == 1e-4


def test_warmup_scales_the_first_iterations_linearly():
    assert learning_rate(2e-3, 0, 10, 0.9, 0, 50) == pytest.approx(2e-3 / 50)
    assert learning_rate(2e-3, 0, 10, 0.9, 24, 50) == pytest.approx(2e-3 * 25 / 50)
    assert learning_rate(2e-3, 0.5, 10, 0.9, 60, 50) == pytest.approx(2e-3 * (1 - 0.05) ** 0.9)


def test_backbone_gets_a_tenth_of_the_learning_rate_by_default():
    args = get_args_parser().parse_args(["--lstm", "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", "16"])
    model = build_model(args, 10, "video")
    optimizer = build_optimizer(args, model)
    set_learning_rate(optimizer, 1e-4, args.backbone_lr_scale)
    head, backbone = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(1e-5) and head["lr"] == 1e-4
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.visumodel.parameters() if p.requires_grad}
    assert not {id(p) for p in head["params"]} & {id(p) for p in model.visumodel.parameters()}
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["weight_decay"] == 5e-4


def test_darknet_detection_heads_are_frozen():
    args = get_args_parser().parse_args(["--lstm", "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", "16"])
    model = build_model(args, 10, "image")
    frozen = {id(p) for p in model.visumodel.detection_parameters()}
    assert frozen and all(not p.requires_grad for p in model.visumodel.detection_parameters())
    reference = build_grounding_model("image", 10, SMALL_CFG, 64, 16)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert len(frozen) == len(reference.visumodel.detection_parameters())
