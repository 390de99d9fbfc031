"""Small grounding models (small cfg, tiny images, random init): reuse of per-frame features, shapes, training.

Evaluation computes ``frame_features`` once per frame and grounds every window from them; this must give
what ``forward(..., 'window')`` gives window by window (docs/behaviour.md §5, windows clipped as in §1).
"""
from __future__ import annotations

import pytest
import torch

from model import SMALL_CFG, build_grounding_model
from utils.io import UserInputError
from utils.windows import window_indices

VOCAB = 12
SIZE = 64  # grids 2x2, 4x4, 8x8: N = 84 cells
EMB = 16
WINDOW = 5


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return build_grounding_model("video", VOCAB, SMALL_CFG, image_size=SIZE, emb_size=EMB).eval()


@pytest.fixture(scope="module")
def video():
    generator = torch.Generator().manual_seed(1)
    frames = torch.randn(7, 3, SIZE, SIZE, generator=generator)  # one video of 7 frames
    word_id = torch.tensor([[3, 5, 7, 2, 0, 0]])
    return frames, word_id


def test_windows_from_precomputed_frame_features_equal_forward_window_by_window(video_model, video):
    frames, word_id = video
    n = frames.shape[0]
    windows = torch.tensor([window_indices(t, n, WINDOW) for t in range(n)])  # (n, T)
    with torch.no_grad():
        feats = video_model.frame_features(frames)  # once per frame: per scale (n, 2E, h, w)
        batched = video_model.ground_windows([f[windows] for f in feats], word_id.expand(n, -1))
        for t in range(n):
            single = video_model(frames[windows[t]].unsqueeze(0), word_id, "window")
            for key in ("pred_anchor", "sim", "loc", "only_obj", "visual", "corr_feat"):
                for ours, ref in zip(batched[key], single[key]):
                    torch.testing.assert_close(ours[t : t + 1], ref, rtol=1e-4, atol=1e-5)


def test_window_of_identical_frames_differs_from_a_window_of_other_frames(video_model, video):
    frames, word_id = video
    with torch.no_grad():
        same = video_model(frames[[2, 2, 2, 2, 2]].unsqueeze(0), word_id, "window")
        moving = video_model(frames[[0, 1, 2, 3, 4]].unsqueeze(0), word_id, "window")
    assert not torch.allclose(same["corr_feat"][0], moving["corr_feat"][0])


def test_pairs_layout_grounds_every_frame_in_sample_order(video_model, video):
    frames, word_id = video
    pairs = frames[[0, 1, 2, 3]].unflatten(0, (2, 2))  # (B=2, T=2, 3, S, S)
    with torch.no_grad():
        out = video_model(pairs, word_id.expand(2, -1), "pairs")
        swapped = video_model(pairs.flip(1), word_id.expand(2, -1), "pairs")
    assert [tuple(p.shape) for p in out["pred_anchor"]] == [(4, 3, 5, 2, 2), (4, 3, 5, 4, 4), (4, 3, 5, 8, 8)]
    # rows are [b0f0, b0f1, b1f0, b1f1]: swapping the frames of each pair swaps the rows within pairs
    torch.testing.assert_close(swapped["sim"][2], out["sim"][2][[1, 0, 3, 2]], rtol=1e-4, atol=1e-5)


def test_output_dict_has_the_contract_keys_and_shapes(video_model, video):
    frames, word_id = video
    with torch.no_grad():
        out = video_model(frames[0:5].unsqueeze(0), word_id, "window")
    assert set(out) == {"pred_anchor", "sim", "loc", "only_obj", "visual", "subject", "corr_feat"}
    assert [tuple(v.shape) for v in out["visual"]] == [(1, EMB, 2, 2), (1, EMB, 4, 4), (1, EMB, 8, 8)]
    assert tuple(out["subject"].shape) == (1, EMB)
    loc = torch.cat([v.flatten() for v in out["loc"]])
    assert loc.min().item() == pytest.approx(0.0, abs=1e-6) and loc.max().item() == pytest.approx(1.0, abs=1e-4)


def test_number_of_cells_follows_the_image_size():
    model = build_grounding_model("image", VOCAB, SMALL_CFG, image_size=128, emb_size=EMB)
    assert model.num_cells == 4 * 4 + 8 * 8 + 16 * 16
    assert model.loc_text_embedding[0].in_features == 336


def test_image_size_that_is_not_a_multiple_of_the_coarsest_stride_is_an_error():
    with pytest.raises(UserInputError, match="multiple of 32"):
        build_grounding_model("image", VOCAB, SMALL_CFG, image_size=100, emb_size=EMB)


def test_input_of_another_size_than_the_model_was_built_for_is_an_error(video_model, video):
    frames, word_id = video
    with pytest.raises(ValueError, match="built for image_size=64"):
        video_model(torch.zeros(1, 5, 3, 96, 96), word_id, "window")


def test_small_cfg_video_model_trains_forward_and_backward(video):
    frames, word_id = video
    torch.manual_seed(0)
    model = build_grounding_model("video", VOCAB, SMALL_CFG, image_size=SIZE, emb_size=EMB, light=True).train()
    out = model(frames[0:4].unflatten(0, (2, 2)), word_id.expand(2, -1), "pairs")
    loss = sum(p.square().mean() for p in out["pred_anchor"]) + sum(s.mean() for s in out["sim"] + out["loc"])
    loss.backward()
    for name in ("visumodel.module_list.0.conv_0.weight", "textmodel.embedding.weight", "corr_conv.2.0.conv.weight",
                 "loc_text_embedding.0.weight", "fcn_out.0.0.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["image", "video"])
def test_forward_under_bf16_autocast_gives_finite_outputs(video, kind):
    frames, word_id = video
    torch.manual_seed(0)
    model = build_grounding_model(kind, VOCAB, SMALL_CFG, image_size=SIZE, emb_size=EMB).eval()
    images = frames[0:2, None] if kind == "image" else frames[0:5].unsqueeze(0)
    args = (word_id.expand(2, -1),) if kind == "image" else (word_id, "window")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, *args)
    assert all(torch.isfinite(p).all() for p in out["pred_anchor"] + out["loc"] + out["sim"])


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    return build_grounding_model("image", VOCAB, SMALL_CFG, image_size=SIZE, emb_size=EMB).eval()


def test_the_image_model_takes_the_video_layout_with_one_frame(image_model, video):
    """Both models take images (B, T, 3, S, S): the image model's T = 1 frame is grounded in either layout."""
    frames, word_id = video
    with torch.no_grad():
        window = image_model(frames[0:2, None], word_id.expand(2, -1), "window")
        pairs = image_model(frames[0:2, None], word_id.expand(2, -1), "pairs")
        direct = image_model.ground(image_model.frame_features(frames[0:2]), word_id.expand(2, -1))
    assert window["pred_anchor"][0].shape[0] == 2
    assert all(torch.equal(a, b) and torch.equal(a, c)
               for a, b, c in zip(window["pred_anchor"], pairs["pred_anchor"], direct["pred_anchor"]))


def test_the_image_model_refuses_more_than_one_frame_per_sample(image_model, video):
    frames, word_id = video
    with pytest.raises(ValueError, match=r"one frame per sample"):
        image_model(frames[0:4].unflatten(0, (2, 2)), word_id.expand(2, -1), "pairs")
