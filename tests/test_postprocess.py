"""Cache files and the temporal re-scoring (docs/behaviour.md §8), on hand-made caches."""
import math
import os
import pickle
import types

import numpy as np
import pytest
import torch

import app.cache
from app.cache import CacheEntry, VideoRescorer, cache_file_path, load_cache_entry, post_process, save_cache_entry
from utils.io import UserInputError, numpy_scalar_globals
from utils.postprocess import rescore_window
from utils.windows import window_sources

SCALAR = numpy_scalar_globals(np.float32)[0][0]  # numpy's scalar reconstructor


def write_video(cache_dir, video_dir, feats, scores, start, boxes=None):
    """Write one video's cache files (feats (n, K, E), scores (n, K)); returns its image paths."""
    images = [f"data/VID/val/{video_dir}/{t:06d}.JPEG" for t in range(len(feats))]
    for t, image in enumerate(images):
        box = boxes[t] if boxes is not None else torch.arange(4.0).repeat(len(scores[t]), 1) + 10 * t
        save_cache_entry(cache_file_path(cache_dir, image, start + t), box, torch.as_tensor(scores[t]),
                         torch.as_tensor(feats[t]))
    return images


def random_video(gen, n, k=3, e=4):
    return torch.randn(n, k, e, generator=gen), torch.rand(n, k, generator=gen)


def reference_post_process(videos, cache_dir, num_frames=5):
    """The reference algorithm, per frame and per candidate, with its file-existence test."""
    frames = [(v, t) for v, video in enumerate(videos) for t in range(len(video))]
    out = []
    for i, (v, t) in enumerate(frames):
        n = len(videos[v])
        centre_path = cache_file_path(cache_dir, videos[v][t], i)
        centre = torch.load(centre_path, weights_only=True)
        feat_i = centre["visu_feat"][:, 0].numpy()
        rows = []  # per window frame: (valid, feats, scores)
        for j in range(num_frames):
            clipped = min(max(t + j - num_frames // 2, 0), n - 1)
            path = cache_file_path(cache_dir, videos[v][clipped], i + j - num_frames // 2)
            entry = torch.load(path if path.exists() else centre_path, weights_only=True)
            rows.append((path.exists(), entry["visu_feat"][:, 0].numpy(), entry["pred_score_topk"]))
        fused = []
        for m in range(len(feat_i)):
            best, matched = [], []
            for _, feats, scores in rows:
                sims = [float(np.dot(feat_i[m], f)) for f in feats]
                n_star = sims.index(max(sims))
                best.append(max(sims))
                matched.append(scores[n_star])
            weights = np.exp(np.array(best) - max(best))
            weights = weights / weights.sum()
            fused.append(sum(w * s for w, s, (ok, _, _) in zip(weights, matched, rows) if ok))
        out.append((int(np.argmax(fused)), fused))
    return out


def test_cache_file_path_uses_the_video_folder_the_stem_and_the_global_index(tmp_path):
    path = cache_file_path(tmp_path, "data/ILSVRC/Data/VID/val/ILSVRC2015_val_00118001/000010.JPEG", 42)
    assert path == tmp_path / "ILSVRC2015_val_00118001" / "000010_42.pth"


def test_saved_entry_has_the_reference_layout_and_round_trips(tmp_path):
    boxes, scores, feats = torch.rand(5, 4), torch.rand(5), torch.randn(5, 7)
    path = save_cache_entry(tmp_path / "v" / "f_0.pth", boxes, scores, feats)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"pred_bbox_topk", "pred_score_topk", "visu_feat"}
    assert raw["pred_bbox_topk"].shape == (5, 1, 4) and raw["pred_bbox_topk"].dtype == torch.float32
    assert raw["visu_feat"].shape == (5, 1, 7)
    assert isinstance(raw["pred_score_topk"], list) and all(type(s) is float for s in raw["pred_score_topk"])
    entry = load_cache_entry(path)
    assert torch.equal(entry.boxes, boxes) and torch.equal(entry.scores, scores)
    assert torch.equal(entry.feats, feats)


def test_scores_pickled_as_numpy_float32_scalars_load(tmp_path):
    scores = [np.float32(0.25), np.float32(0.5)]
    torch.save({"pred_bbox_topk": torch.zeros(2, 1, 4), "pred_score_topk": scores,
                "visu_feat": torch.zeros(2, 1, 3)}, tmp_path / "numpy2.pth")
    assert b"multiarray\nscalar" in (tmp_path / "numpy2.pth").read_bytes()
    assert load_cache_entry(tmp_path / "numpy2.pth").scores.tolist() == [0.25, 0.5]


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy scalars under the numpy 1.x name ``numpy.core.multiarray.scalar`` (protocol 2)."""

    def save_global(self, obj, name=None):
        if obj is SCALAR:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def test_scores_pickled_by_numpy_1_load(tmp_path):
    numpy1_pickle = types.ModuleType("numpy1_pickle")
    numpy1_pickle.Pickler = Numpy1Pickler
    path = tmp_path / "numpy1.pth"
    torch.save({"pred_bbox_topk": torch.zeros(1, 1, 4), "pred_score_topk": [np.float32(0.75)],
                "visu_feat": torch.zeros(1, 1, 3)}, path, pickle_module=numpy1_pickle, pickle_protocol=2)
    assert b"numpy.core.multiarray\nscalar" in path.read_bytes()
    assert load_cache_entry(path).scores.tolist() == [0.75]


@pytest.mark.parametrize("payload", [os.system, np.zeros(2, dtype=np.float32), [np.float64(0.5)]],
                         ids=["os.system", "numpy array", "numpy float64"])
def test_any_other_global_is_rejected(tmp_path, payload):
    path = tmp_path / "bad.pth"
    torch.save({"pred_bbox_topk": torch.zeros(1, 1, 4), "pred_score_topk": payload,
                "visu_feat": torch.zeros(1, 1, 3)}, path)
    with pytest.raises(UserInputError, match="allow-list"):
        load_cache_entry(path)


@pytest.mark.parametrize(("entry", "key"), [
    ({"pred_bbox_topk": torch.zeros(2, 1, 4), "visu_feat": torch.zeros(2, 1, 3)}, "pred_score_topk"),
    ({"pred_bbox_topk": torch.zeros(2, 4), "pred_score_topk": [0.1, 0.2], "visu_feat": torch.zeros(2, 1, 3)},
     "pred_bbox_topk"),
    ({"pred_bbox_topk": torch.zeros(2, 1, 4), "pred_score_topk": [0.1], "visu_feat": torch.zeros(2, 1, 3)},
     "pred_score_topk"),
    ({"pred_bbox_topk": torch.zeros(2, 1, 4), "pred_score_topk": [0.1, 0.2], "visu_feat": torch.zeros(3, 1, 3)},
     "visu_feat"),
])
def test_malformed_entry_names_the_file_and_the_key(tmp_path, entry, key):
    path = tmp_path / "f_0.pth"
    torch.save(entry, path)
    with pytest.raises(UserInputError, match=f"{path}.*'{key}'"):
        load_cache_entry(path)


def test_window_sources_fill_clipped_positions_with_the_centre():
    source, valid = window_sources(3, 5)
    assert source.tolist() == [[0, 0, 0, 1, 2], [1, 0, 1, 2, 1], [0, 1, 2, 2, 2]]
    assert valid.tolist() == [[False, False, True, True, True], [False, True, True, True, False],
                              [True, True, True, False, False]]


BOUNDARY_FEATS = torch.tensor([
    [[1.0, 0.0], [0.0, 1.0]],  # frame 0 (the centre)
    [[0.5, 0.0], [0.0, 2.0]],  # frame 1
    [[0.0, 1.0], [2.0, 0.0]],  # frame 2
])
BOUNDARY_SCORES = torch.tensor([[0.9, 0.4], [0.3, 0.8], [0.6, 0.2]])


def boundary_expected():
    """First frame of a 3-frame video: positions 0, 1 are clipped (centre's own entry, weight 0)."""
    e = math.e
    # candidate 0: max sims per position (1, 1, 1, 0.5, 2), matched scores (0.9, 0.9, 0.9, 0.3, 0.2)
    fused0 = (e * 0.9 + math.exp(0.5) * 0.3 + math.exp(2) * 0.2) / (3 * e + math.exp(0.5) + math.exp(2))
    # candidate 1: max sims (1, 1, 1, 2, 1), matched scores (0.4, 0.4, 0.4, 0.8, 0.6)
    fused1 = (e * 0.4 + math.exp(2) * 0.8 + e * 0.6) / (3 * e + math.exp(2) + e)
    return [fused0, fused1]


def test_boundary_frame_zeroes_clipped_weights_after_the_softmax():
    source, valid = window_sources(3, 5)
    best, fused = rescore_window(BOUNDARY_FEATS[0], BOUNDARY_FEATS[source[0]], BOUNDARY_SCORES[source[0]],
                                 valid[0])
    assert fused.tolist() == pytest.approx(boundary_expected(), rel=1e-6)
    assert fused.tolist() == pytest.approx([0.25702, 0.47254], abs=1e-5)
    assert best.item() == 1


def test_boundary_frame_through_the_cache_files(tmp_path):
    images = write_video(tmp_path, "vid", BOUNDARY_FEATS, BOUNDARY_SCORES, start=0)
    result = post_process([images], tmp_path, progress=False)
    assert [r.frame for r in result] == [0, 1, 2]
    assert result[0].candidate == 1
    assert result[0].box.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_rescore_is_batched_over_leading_dims():
    gen = torch.Generator().manual_seed(0)
    feats, scores = random_video(gen, 6, k=4, e=8)
    source, valid = window_sources(6, 5)
    best, fused = rescore_window(feats, feats[source], scores[source], valid)
    for t in range(6):
        b, f = rescore_window(feats[t], feats[source[t]], scores[source[t]], valid[t])
        assert b.item() == best[t].item() and torch.allclose(f, fused[t])


def test_ties_take_the_first_match_and_the_first_candidate():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two identical candidates: every similarity ties
    window = feats.expand(5, 2, 2)
    scores = torch.tensor([[0.2, 0.9]]).expand(5, 2)
    best, fused = rescore_window(feats, window, scores, torch.ones(5, dtype=torch.bool))
    assert fused.tolist() == pytest.approx([0.2, 0.2])  # n* = 0 (first), whose score is 0.2
    assert best.item() == 0


def test_one_frame_video_uses_only_its_own_entry_with_weight_one_fifth(tmp_path):
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    scores = torch.tensor([[0.3, 0.7]])
    images = write_video(tmp_path, "single", feats, scores, start=0)
    result = post_process([images], tmp_path, progress=False)
    assert len(result) == 1 and result[0].candidate == 1
    _, fused = rescore_window(feats[0], feats[[0] * 5], scores[[0] * 5], torch.tensor([0, 0, 1, 0, 0]).bool())
    assert fused.tolist() == pytest.approx([0.3 / 5, 0.7 / 5])


def test_driver_matches_the_reference_algorithm_on_two_videos(tmp_path):
    gen = torch.Generator().manual_seed(1)
    first, second = random_video(gen, 7), random_video(gen, 4)
    videos = [write_video(tmp_path, "a", *first, start=0), write_video(tmp_path, "b", *second, start=7)]
    assert (tmp_path / "b" / "000000_7.pth").is_file()  # the global index continues across videos
    result = post_process(videos, tmp_path, progress=False)
    expected = reference_post_process(videos, tmp_path)
    assert [r.frame for r in result] == list(range(11))
    assert [r.candidate for r in result] == [best for best, _ in expected]
    for t in (0, 3, 6):
        _, fused = rescore_window(first[0][t], first[0][window_sources(7, 5)[0][t]],
                                  first[1][window_sources(7, 5)[0][t]], window_sources(7, 5)[1][t])
        assert fused.tolist() == pytest.approx(expected[t][1], rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 4, 9])
def test_frames_pushed_one_at_a_time_get_the_picks_of_the_cache_driver(tmp_path, n):
    """The in-memory path (candidates pushed as they are decoded) re-scores exactly as post_process."""
    gen = torch.Generator().manual_seed(n)
    feats, scores = random_video(gen, n)
    boxes = torch.rand(n, 3, 4, generator=gen) * 100
    images = write_video(tmp_path, "a", feats, scores, start=0, boxes=boxes)
    rescorer = VideoRescorer(5)
    picks = [p for t in range(n) for p in rescorer.push(CacheEntry(boxes[t:t + 1], scores[t:t + 1], feats[t:t + 1]))]
    picks += rescorer.finish()
    expected = post_process([images], tmp_path, progress=False)
    assert [t for t, _, _ in picks] == list(range(n))
    assert [b for _, b, _ in picks] == [r.candidate for r in expected]
    assert torch.equal(torch.stack([box for _, _, box in picks]), torch.stack([r.box for r in expected]))
    assert len(rescorer.kept.feats) <= 5


def test_a_window_never_reads_the_other_videos_files(tmp_path):
    # Two tracks of the same video folder; the second starts on the first one's last frame (000002), so
    # its first frame's clipped position 1 names v/000002_2.pth, which is the first track's own file.
    gen = torch.Generator().manual_seed(2)
    track1 = write_video(tmp_path, "v", *random_video(gen, 3, k=2, e=2), start=0)
    save_cache_entry(tmp_path / "v" / "000002_2.pth", torch.zeros(2, 4), torch.tensor([5.0, 0.0]),
                     torch.tensor([[0.0, 10.0], [10.0, 0.0]]))  # would make candidate 1 win if read
    track2 = [f"data/VID/val/v/{t:06d}.JPEG" for t in (2, 3)]
    for t, image in enumerate(track2):
        save_cache_entry(cache_file_path(tmp_path, image, 3 + t), torch.zeros(2, 4), torch.tensor([0.6, 0.5]),
                         torch.eye(2))
    result = post_process([track1, track2], tmp_path, progress=False)
    assert [r.candidate for r in result[3:]] == [0, 0]
    # the reference's file-existence test would read the first track's file here (see the report)
    assert reference_post_process([track1, track2], tmp_path)[3][0] == 1


def test_each_frame_file_is_read_once(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    videos = [write_video(tmp_path, "a", *random_video(gen, 6), start=0),
              write_video(tmp_path, "b", *random_video(gen, 2), start=6)]
    reads = []
    original = app.cache.load_cache_entry
    monkeypatch.setattr(app.cache, "load_cache_entry", lambda path: reads.append(path) or original(path))
    post_process(videos, tmp_path, progress=False)
    assert len(reads) == len(set(reads)) == 8


def test_missing_or_empty_cache_folder_says_what_is_expected(tmp_path):
    with pytest.raises(UserInputError, match="not found.*<video_dir>/<frame_stem>_<global frame index>.pth"):
        post_process([["data/v/000000.JPEG"]], tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no cache files.*<video_dir>/<frame_stem>"):
        post_process([["data/v/000000.JPEG"]], tmp_path / "empty", progress=False)


def test_incomplete_cache_counts_and_names_the_missing_files(tmp_path):
    gen = torch.Generator().manual_seed(4)
    images = write_video(tmp_path, "v", *random_video(gen, 10), start=0)
    for t in (2, 4, 5, 6, 7, 8, 9):
        cache_file_path(tmp_path, images[t], t).unlink()
    with pytest.raises(UserInputError) as err:
        post_process([images], tmp_path, progress=False)
    message = str(err.value)
    assert "7 of 10" in message and "and 2 more" in message
    assert str(cache_file_path(tmp_path, images[2], 2)) in message
    assert str(cache_file_path(tmp_path, images[9], 9)) not in message


def test_progress_bar_can_be_disabled(tmp_path, capsys):
    images = write_video(tmp_path, "v", BOUNDARY_FEATS, BOUNDARY_SCORES, start=0)
    post_process([images], tmp_path, progress=False)
    assert capsys.readouterr().err == ""
    post_process([images], tmp_path, progress=True)
    assert "post-processing" in capsys.readouterr().err
