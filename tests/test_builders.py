"""The optimiser and learning-rate schedule built from the command line (docs/behaviour.md §6)."""
from __future__ import annotations

import pytest
import torch

from app.builders import PolyLR, build_lr_scheduler, build_model, build_optimizer
from model import SMALL_CFG, build_grounding_model
from train_semantic_attention_cogrounding import get_args_parser


def hand_set_rates(lr: float, nb_epoch: int, power: float, steps: int, per_iter: bool, warmup: int,
                   backbone_scale: float) -> list[tuple[float, float]]:
    """The schedule as the training loop used to set it before every iteration (head group, backbone group)."""
    rates = []
    for epoch in range(nb_epoch):
        for it in range(steps):
            progress = epoch + it / steps if per_iter else epoch
            rate = lr * (1 - progress / nb_epoch) ** power
            rate = rate * min(1.0, (epoch * steps + it + 1) / warmup) if warmup > 0 else rate
            rates.append((rate, rate * backbone_scale))
    return rates


def two_group_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                            {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)


def rates_seen(optimizer: torch.optim.Optimizer, scheduler: PolyLR, iterations: int) -> list[tuple[float, float]]:
    seen = []
    for _ in range(iterations):
        seen.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("per_iter, warmup", [(False, 0), (True, 0), (False, 7), (True, 7)],
                         ids=["per-epoch", "per-iteration", "per-epoch+warmup", "per-iteration+warmup"])
def test_scheduler_rates_are_the_poly_formula_bit_for_bit(per_iter, warmup):
    optimizer = two_group_optimizer()
    scheduler = PolyLR(optimizer, 2e-3, 3, 0.9, 5, per_iter, warmup, (1.0, 0.1))
    assert rates_seen(optimizer, scheduler, 15) == hand_set_rates(2e-3, 3, 0.9, 5, per_iter, warmup, 0.1)


def test_poly_decay_per_epoch_is_the_reference_schedule():
    # lr (1 - epoch / nb_epoch) ** 0.9, constant within an epoch: 1e-4, then 1e-4 * 0.5 ** 0.9 half way
    optimizer = two_group_optimizer()
    rates = rates_seen(optimizer, PolyLR(optimizer, 1e-4, 2, 0.9, 3), 6)
    assert [head for head, _ in rates] == [1e-4] * 3 + [1e-4 * 0.5 ** 0.9] * 3


def test_warmup_scales_the_first_iterations_linearly():
    optimizer = two_group_optimizer()
    rates = rates_seen(optimizer, PolyLR(optimizer, 2e-3, 10, 0.9, 100, warmup_iters=50), 51)
    assert rates[0][0] == pytest.approx(2e-3 / 50) and rates[24][0] == pytest.approx(2e-3 * 25 / 50)
    assert rates[50][0] == 2e-3


def test_a_scheduler_built_at_a_later_iteration_continues_the_same_rates():
    """Resuming builds the scheduler at the checkpoint's iteration (``last_epoch = iteration - 1``)."""
    optimizer = two_group_optimizer()
    straight = rates_seen(optimizer, PolyLR(optimizer, 2e-3, 3, 0.9, 5, True, 7), 15)
    optimizer = two_group_optimizer()
    resumed = rates_seen(optimizer, PolyLR(optimizer, 2e-3, 3, 0.9, 5, True, 7, last_epoch=8 - 1), 7)
    assert resumed == straight[8:]


def test_scheduler_state_survives_the_safe_checkpoint_loader(tmp_path):
    optimizer = two_group_optimizer()
    scheduler = PolyLR(optimizer, 2e-3, 3, 0.9, 5, True, 7)
    rates_seen(optimizer, scheduler, 4)
    torch.save({"lr_scheduler": scheduler.state_dict()}, tmp_path / "ckpt.pth")
    state = torch.load(tmp_path / "ckpt.pth", weights_only=True)["lr_scheduler"]
    restored = PolyLR(two_group_optimizer(), 2e-3, 3, 0.9, 5, True, 7)
    restored.load_state_dict(state)
    assert restored.last_epoch == 4 and restored.get_last_lr() == scheduler.get_last_lr()


def test_the_flags_build_the_schedule():
    args = get_args_parser().parse_args(["--lstm", "--lr", "2e-3", "--nb_epoch", "4", "--power", "1",
                                         "--backbone_lr_scale", "0.5", "--lr_per_iter", "--warmup_iters", "3"])
    optimizer = two_group_optimizer()
    assert rates_seen(optimizer, build_lr_scheduler(args, optimizer, 2), 8) == hand_set_rates(
        2e-3, 4, 1.0, 2, True, 3, 0.5)


def test_backbone_gets_a_tenth_of_the_learning_rate_by_default():
    args = get_args_parser().parse_args(["--lstm", "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", "16"])
    model = build_model(args, 10, "video")
    optimizer = build_optimizer(args, model)
    build_lr_scheduler(args, optimizer, steps_per_epoch=10)
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


def test_freeze_backbone_leaves_it_out_of_the_optimizer_and_keeps_its_batch_norm_statistics():
    args = get_args_parser().parse_args(["--lstm", "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", "16",
                                         "--freeze_backbone", "--optimizer", "adamw", "--lr", "0.1"])
    model = build_model(args, 10, "image").train()
    optimizer = build_optimizer(args, model)
    head, backbone = optimizer.param_groups
    assert backbone["params"] == [] and head["params"]
    assert not any(p.requires_grad for p in model.visumodel.parameters())
    before = {k: v.clone() for k, v in model.visumodel.state_dict().items()}
    out = model(torch.rand(2, 1, 3, 64, 64), torch.randint(1, 10, (2, 5)))
    out["pred_anchor"][0].sum().backward()
    optimizer.step()
    assert not model.visumodel.training and model.mapping_visu.training
    for key, value in model.visumodel.state_dict().items():
        assert torch.equal(value, before[key]), key
