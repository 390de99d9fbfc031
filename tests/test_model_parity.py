"""The image and video models reproduce the reference outputs (tests/fixtures, docs/behaviour.md §3-5).

Both models use the reference cfg and every state-dict tensor set by the fill rule. Criterion for each
tensor: same shape and ``max|ours - ref| <= 1e-4 * max|ref|`` (the fixtures' README: float32 on CPU
reproduces them to about 1e-5 relative, above 1e-4 means a different computation).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.cogrounding import CoGroundingModel
from model.grounding import GroundingModel
from tests.fill_rule import fill_model

FIXTURES = Path(__file__).parent / "fixtures"
REL_TOL = 1e-4
SCALES = range(3)


def _load(name: str) -> dict:
    return torch.load(FIXTURES / f"model_parity_{name}.pt", weights_only=True)


def assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    err = (actual.float() - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= REL_TOL * scale, f"max abs error {err:.3g} > {REL_TOL} x max |ref| {scale:.3g}"


@pytest.fixture(scope="module")
def inputs() -> dict:
    return _load("inputs")


@pytest.fixture(scope="module")
def expected() -> dict:
    return _load("outputs")


@pytest.fixture(scope="module")
def image_model(inputs) -> GroundingModel:
    return fill_model(GroundingModel(len(inputs["corpus_words"]))).eval()


@pytest.fixture(scope="module")
def video_model(inputs) -> CoGroundingModel:
    return fill_model(CoGroundingModel(len(inputs["corpus_words"]))).eval()


@pytest.fixture(scope="module")
def image_outputs(image_model, inputs) -> dict:
    with torch.no_grad():
        return image_model(inputs["frames"][0:2, None], inputs["word_id"][0:2])


@pytest.fixture(scope="module")
def pairs_outputs(video_model, inputs, expected) -> dict:
    ref = expected["cogrounding_pairs"]
    frames = inputs["frames"][ref["frame_index"]].unflatten(0, (2, 2))  # (B=2, T=2, 3, S, S)
    word_id = inputs["word_id"][ref["word_index"][::2]]  # one phrase per pair
    with torch.no_grad():
        return video_model(frames, word_id, "pairs")


@pytest.fixture(scope="module")
def window_outputs(video_model, inputs, expected) -> dict:
    ref = expected["cogrounding_window"]
    frames = inputs["frames"][ref["frame_index"]].unsqueeze(0)  # (B=1, T=5, 3, S, S)
    with torch.no_grad():
        return video_model(frames, inputs["word_id"][ref["word_index"]], "window")


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_image_model_state_dict_has_the_reference_keys_and_shapes(image_model):
    ref = _load("keys")["grounding_keys"]
    assert _shapes(image_model) == {k.removeprefix("module."): tuple(v) for k, v in ref.items()}


def test_video_model_state_dict_has_the_reference_keys_and_shapes(video_model):
    ref = _load("keys")["cogrounding_keys"]
    assert _shapes(video_model) == {k.removeprefix("module."): tuple(v) for k, v in ref.items()}


@pytest.fixture(scope="module")
def backbone_features(image_model, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return image_model.visumodel(inputs["frames"][0:1])


@pytest.mark.parametrize("scale", SCALES)
def test_backbone_features_match(backbone_features, scale):
    assert_matches(backbone_features[scale], _load("backbone")["backbone"][scale])


# (output key of our dict, key in the fixture); pred_anchor flattened to (B, 15, h, w) is the reference outbox
OUTPUT_KEYS = [("pred_anchor", "outbox"), ("sim", "sim_score"), ("loc", "loc_score"), ("only_obj", "only_obj")]


def _ours(outputs: dict, key: str, scale: int) -> torch.Tensor:
    value = outputs[key][scale]
    return value.flatten(1, 2) if key == "pred_anchor" else value


@pytest.mark.parametrize("key,ref_key", OUTPUT_KEYS)
def test_image_model_outputs_match(image_outputs, expected, key, ref_key):
    for s in SCALES:
        assert_matches(_ours(image_outputs, key, s), expected["grounding"][ref_key][s])


@pytest.mark.parametrize("key,ref_key", OUTPUT_KEYS)
def test_video_model_pairs_layout_outputs_match(pairs_outputs, expected, key, ref_key):
    for s in SCALES:
        assert_matches(_ours(pairs_outputs, key, s), expected["cogrounding_pairs"][ref_key][s])


@pytest.mark.parametrize("key,ref_key", [*OUTPUT_KEYS, ("corr_feat", "corr_feat")])
def test_video_model_window_layout_outputs_match(window_outputs, expected, key, ref_key):
    for s in SCALES:
        assert_matches(_ours(window_outputs, key, s), expected["cogrounding_window"][ref_key][s])
