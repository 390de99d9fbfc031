"""Mixed precision (``--amp``): what stays float32 under autocast, and how close bf16 stays to float32.

The parts whose rounding moves the arg-max box run in float32 whatever the autocast dtype: the phrase vectors,
the co-attention (softmax of 10 x cosine), the last conv of the head with the confidence product, and the
location score with its min-max normalisation.
"""
from __future__ import annotations

import pytest
import torch

from model import SMALL_CFG, build_grounding_model

SIZE = 64
EMB = 16


@pytest.fixture(scope="module")
def window():
    torch.manual_seed(0)
    model = build_grounding_model("video", 12, SMALL_CFG, image_size=SIZE, emb_size=EMB).eval()
    frames = torch.randn(2, 5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    word_id = torch.tensor([[3, 5, 7, 2, 0, 0], [4, 4, 9, 0, 0, 0]])
    return model, frames, word_id


def test_confidences_location_phrase_and_co_attention_stay_float32_under_bf16(window):
    model, frames, word_id = window
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, word_id, "window")
    for key in ("pred_anchor", "sim", "loc", "only_obj", "corr_feat"):
        assert {t.dtype for t in out[key]} == {torch.float32}, key
    assert out["subject"].dtype == torch.float32


def test_bf16_outputs_stay_close_to_float32(window):
    model, frames, word_id = window
    with torch.inference_mode():
        full = model(frames, word_id, "window")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(frames, word_id, "window")
    for key in ("sim", "loc", "corr_feat"):
        for a, b in zip(half[key], full[key]):
            torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)

