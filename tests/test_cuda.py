"""CUDA: the same function on the GPU as on the CPU, a training step and mixed precision on the GPU.

Marked ``cuda`` and skipped without a CUDA device; ``bench/gpu_check.sh`` runs them (``pytest -m cuda``).
"""
from __future__ import annotations

import pytest
import torch

from app.engine import train_one_epoch
from model import SMALL_CFG, build_grounding_model
from model.losses import GroundingCriterion
from utils.amp import autocast
from utils.geometry import DEFAULT_ANCHORS, Geometry

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SIZE = 64
EMB = 16
GEOMETRY = Geometry(SIZE, DEFAULT_ANCHORS, 416)


@pytest.fixture()
def no_tf32():
    """True float32 convolutions and matmuls on the GPU, as the runtime sets them."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        matmul = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _inputs(kind: str) -> tuple:
    generator = torch.Generator().manual_seed(1)
    word_id = torch.tensor([[3, 5, 7, 2, 0, 0], [4, 4, 9, 0, 0, 0]])
    if kind == "image":
        return torch.randn(2, 1, 3, SIZE, SIZE, generator=generator), word_id
    return torch.randn(2, 5, 3, SIZE, SIZE, generator=generator), word_id, "window"


@pytest.mark.parametrize("kind", ["image", "video"])
def test_forward_on_cuda_matches_cpu(kind, no_tf32):
    torch.manual_seed(0)
    model = build_grounding_model(kind, 12, SMALL_CFG, image_size=SIZE, emb_size=EMB).eval()
    inputs = _inputs(kind)
    with torch.inference_mode():
        cpu = model(*inputs)
        gpu = model.cuda()(*[x.cuda() if isinstance(x, torch.Tensor) else x for x in inputs])
    for key in ("pred_anchor", "sim", "loc"):
        for a, b in zip(gpu[key], cpu[key]):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("amp_dtype", [None, torch.float16, torch.bfloat16])
def test_training_steps_on_cuda_lower_the_loss(amp_dtype):
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_grounding_model("video", 12, SMALL_CFG, image_size=SIZE, emb_size=EMB).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(2)
    batch = {"images": torch.randn(4, 2, 3, SIZE, SIZE, generator=generator),
             "word_id": torch.randint(1, 12, (4, 6), generator=generator),
             "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]).expand(4, 2, 4).clone()}
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    losses = [train_one_epoch(model, GroundingCriterion(), [batch], optimizer, device, 0, GEOMETRY, scaler=scaler,
                              amp_dtype=amp_dtype, progress=False)["loss"] for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_amp_on_cuda_gives_float32_outputs_close_to_float32(amp_dtype, no_tf32):
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_grounding_model("video", 12, SMALL_CFG, image_size=SIZE, emb_size=EMB).to(device).eval()
    images, word_id, layout = _inputs("video")
    with torch.inference_mode():
        full = model(images.to(device), word_id.to(device), layout)
        with autocast(device, amp_dtype):
            half = model(images.to(device), word_id.to(device), layout)
    assert {t.dtype for t in half["pred_anchor"]} == {torch.float32}
    for key in ("sim", "loc", "corr_feat"):
        for a, b in zip(half[key], full[key]):
            torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
