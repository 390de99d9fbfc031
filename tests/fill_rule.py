"""The deterministic weights of the reference fixtures (tests/fixtures/README.md, "fill rule")."""
from __future__ import annotations

import math
import zlib

import torch
from torch import nn


def fill_value(key: str, shape: torch.Size) -> torch.Tensor:
    """The float64 value the fill rule gives the state-dict entry ``key`` (without ``module.``)."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    r = torch.rand(shape, generator=generator, dtype=torch.float64)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.float64)
    if key.endswith("running_var"):
        return 0.75 + 0.5 * r
    if key.endswith("running_mean"):
        return (r - 0.5) * 0.2
    if len(shape) >= 2:
        return (2 * r - 1) * math.sqrt(3 / (r.numel() // shape[0]))
    if key.endswith(".weight"):
        return 1 + (r - 0.5) * 0.2
    return (r - 0.5) * 0.2


@torch.no_grad()
def fill_model(model: nn.Module) -> nn.Module:
    """Set every state-dict tensor of ``model`` by the fill rule (cast to the tensor's dtype)."""
    for key, tensor in model.state_dict().items():
        tensor.copy_(fill_value(key.removeprefix("module."), tensor.shape).to(tensor.dtype))
    return model
