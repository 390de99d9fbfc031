"""Evaluation engine: window streaming, batch-size invariance, feature reuse vs recomputation, scoring."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import app.records
from app.cache import load_cache_entry
from app.engine import evaluate_video, evaluate_video_windows
from app.records import score_boxes, summarize
from app.stream import WindowStream
from dataset.vid_loader import VIDDataset, collate_sequence_frames
from model import SMALL_CFG, build_grounding_model
from utils.geometry import Geometry
from utils.io import safe_load
from utils.letterbox import Letterbox
from utils.windows import window_indices
from utils.word_utils import load_corpus

SIZE = 64
GEOMETRY = Geometry.for_dataset("VID", SIZE, 416)
BOX_ATOL = 1e-3  # px
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ WindowStream

def stream_windows(n: int, k: int) -> list[tuple[int, list[int]]]:
    """(centre, window) of every window a ``k``-frame stream emits for one ``n``-frame video; frames are ints."""
    stream = WindowStream(k)
    return [out for t in range(n) for out in stream.push(0, t, n, t)]


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
def test_window_stream_gives_each_frame_its_clipped_window(n: int, k: int) -> None:
    windows = stream_windows(n, k)
    assert [centre for centre, _ in windows] == list(range(n))
    assert [window for _, window in windows] == [window_indices(t, n, k) for t in range(n)]


def test_window_stream_clips_at_both_ends_of_a_short_video() -> None:
    assert stream_windows(3, 5) == [(0, [0, 0, 0, 1, 2]), (1, [0, 0, 1, 2, 2]), (2, [0, 1, 2, 2, 2])]


def test_window_stream_one_frame_video_repeats_the_frame() -> None:
    assert stream_windows(1, 5) == [(0, [0, 0, 0, 0, 0])]


def test_window_stream_emits_a_window_as_soon_as_its_last_frame_arrives() -> None:
    stream = WindowStream(5)
    emitted = [[centre for centre, _ in stream.push(0, t, 7, t)] for t in range(7)]
    assert emitted == [[], [], [0], [1], [2], [3], [4, 5, 6]]


def test_window_stream_starts_afresh_for_the_next_video() -> None:
    stream = WindowStream(5)
    for t in range(3):
        stream.push(0, t, 3, ("a", t))
    second = [out for t in range(2) for out in stream.push(1, t, 2, ("b", t))]
    assert second == [(("b", 0), [("b", 0), ("b", 0), ("b", 0), ("b", 1), ("b", 1)]),
                      (("b", 1), [("b", 0), ("b", 0), ("b", 1), ("b", 1), ("b", 1)])]


@pytest.mark.parametrize("order", [[1], [0, 2], [0, 1, 1]])
def test_window_stream_rejects_frames_out_of_order(order: list[int]) -> None:
    stream = WindowStream(5)
    for t in order[:-1]:
        stream.push(0, t, 4, t)
    with pytest.raises(ValueError, match="in order"):
        stream.push(0, order[-1], 4, order[-1])


def test_window_stream_rejects_a_new_video_before_the_last_one_ended() -> None:
    """A video cut short would otherwise lose the windows still waiting for its last frames, silently."""
    stream = WindowStream(5)
    for t in range(3):
        stream.push(0, t, 5, t)
    with pytest.raises(ValueError):
        stream.push(1, 0, 5, 0)


@pytest.mark.parametrize("k", [2, 3, 5, 9])
def test_window_stream_keeps_at_most_k_frames(k: int) -> None:
    stream = WindowStream(k)
    kept = []
    for t in range(40):
        stream.push(0, t, 40, t)
        kept.append(len(stream.frames))
    assert max(kept) <= k
    assert len(stream.frames) <= k


# ------------------------------------------------------------------------------------- video evaluation

@pytest.fixture(scope="module")
def test_set(tiny_root: Path) -> VIDDataset:
    corpus = load_corpus(tiny_root / "VID" / "corpus.pth")
    return VIDDataset(tiny_root, tiny_root, "VID", "test", corpus, image_size=SIZE, num_frames=5)


@pytest.fixture(scope="module")
def model(test_set: VIDDataset) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_grounding_model("video", len(test_set.corpus), SMALL_CFG, image_size=SIZE, emb_size=32).eval()


@pytest.fixture
def cells(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The arg-max cell (flat over the 3 scales) of every scored sample, in scoring order."""
    seen: list[torch.Tensor] = []
    decode = app.records.decode_topk

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        decoded = decode(*args, **kwargs)
        if kwargs.get("k") == 1:
            seen.append(decoded.cell[:, 0])
        return decoded

    monkeypatch.setattr(app.records, "decode_topk", spy)
    return seen


def run_stream(model: torch.nn.Module, dataset: VIDDataset, batch_size: int, cache_dir: Path | None = None,
               share: bool = True) -> list[dict]:
    loader = DataLoader(dataset.sequence_frames(range(len(dataset.videos)), share), batch_size=batch_size,
                        collate_fn=collate_sequence_frames)
    return evaluate_video(model, loader, torch.device("cpu"), GEOMETRY, num_frames=5, batch_size=batch_size,
                          cache_dir=cache_dir, progress=False)


def run_windows(model: torch.nn.Module, dataset: VIDDataset, batch_size: int, cache_dir: Path | None = None
                ) -> list[dict]:
    loader = DataLoader(dataset, batch_size=batch_size)
    return evaluate_video_windows(model, loader, torch.device("cpu"), GEOMETRY, cache_dir=cache_dir,
                                  progress=False)


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    """Same samples, ground truth and hits; boxes within BOX_ATOL px and IoUs within 1e-4."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        exact = {k: v for k, v in a.items() if k not in ("pred", "iou")}
        assert exact == {k: v for k, v in b.items() if k not in ("pred", "iou")}
        assert a["pred"] == pytest.approx(b["pred"], abs=BOX_ATOL)
        assert a["iou"] == pytest.approx(b["iou"], abs=1e-4)


@pytest.mark.parametrize("run", [run_stream, run_windows], ids=["stream", "windows"])
def test_batch_size_does_not_change_predictions(run, model, test_set, cells) -> None:  # noqa: ANN001
    """Same arg-max cells and boxes at batch size 1 and 3.

    Not bit-identical: on the CPU, oneDNN picks different convolution kernels (and blockings) for different
    batch sizes, so activations differ in the last float32 bits; cells must still agree exactly.
    """
    one = run(model, test_set, 1)
    one_cells = torch.cat(cells)
    cells.clear()
    three = run(model, test_set, 3)
    assert torch.equal(torch.cat(cells), one_cells)
    assert_same_records(three, one)


def test_streaming_evaluation_equals_window_by_window(model, test_set, cells) -> None:  # noqa: ANN001
    windows = run_windows(model, test_set, 2)
    window_cells = torch.cat(cells)
    cells.clear()
    streamed = run_stream(model, test_set, 2)
    assert torch.equal(torch.cat(cells), window_cells)
    assert [r["index"] for r in streamed] == list(range(len(test_set)))
    assert [r["image"] for r in streamed] == [path for video in test_set.videos for path, _, _ in video]
    assert_same_records([{k: v for k, v in r.items() if k not in ("video", "frame")} for r in streamed],
                        windows)


def test_streaming_evaluation_rejects_a_video_cut_short(model, test_set) -> None:  # noqa: ANN001
    """Without its last frame, the last video's last windows are never complete: an error, not fewer records."""
    frames = test_set.sequence_frames(range(len(test_set.videos)))
    loader = DataLoader(Subset(frames, range(len(frames) - 1)), batch_size=2, collate_fn=collate_sequence_frames)
    with pytest.raises(ValueError):
        evaluate_video(model, loader, torch.device("cpu"), GEOMETRY, num_frames=5, batch_size=2, progress=False)


def assert_same_cache(got: Path, expected: Path, count: int) -> None:
    """The same ``count`` cache file names; boxes within BOX_ATOL px, scores and features within float noise."""
    names = sorted(p.relative_to(expected) for p in expected.rglob("*.pth"))
    assert len(names) == count
    assert sorted(p.relative_to(got) for p in got.rglob("*.pth")) == names
    for name in names:
        a, b = load_cache_entry(got / name), load_cache_entry(expected / name)
        torch.testing.assert_close(a.boxes, b.boxes, atol=BOX_ATOL, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.feats, b.feats, atol=1e-5, rtol=1e-4)


def test_streaming_writes_the_same_cache_as_window_by_window(model, test_set, tmp_path) -> None:  # noqa: ANN001
    run_windows(model, test_set, 2, cache_dir=tmp_path / "windows")
    run_stream(model, test_set, 2, cache_dir=tmp_path / "stream")
    assert_same_cache(tmp_path / "stream", tmp_path / "windows", len(test_set))


@pytest.fixture(scope="module")
def shared_set(test_set: VIDDataset, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> VIDDataset:
    """The tiny test split plus, after it, a second sentence (another entry's phrase, box moved) over the
    frames of each video, as VID-Sentence has several tubes and sentences per video."""
    split_root = tmp_path_factory.mktemp("shared")
    videos = safe_load(tiny_root / "VID" / "VID_video_level_test.pth", what="index file")
    phrases = [video[0][2] for video in videos]
    extra = [[(path, [x1 + 3, y1 + 2, x2, y2], phrases[(v + 1) % len(videos)]) for path, (x1, y1, x2, y2), _ in video]
             for v, video in enumerate(videos)]
    (split_root / "VID").mkdir()
    torch.save(videos + extra, split_root / "VID" / "VID_video_level_test.pth")
    return VIDDataset(tiny_root, split_root, "VID", "test", test_set.corpus, image_size=SIZE, num_frames=5)


def test_each_distinct_frame_goes_through_the_backbone_once(model, shared_set, monkeypatch) -> None:  # noqa: ANN001
    seen = []
    features = model.frame_features
    monkeypatch.setattr(model, "frame_features", lambda images: seen.append(len(images)) or features(images))
    run_stream(model, shared_set, 2)
    assert sum(seen) == len(shared_set) // 2


def test_shared_frames_give_the_per_sentence_records_and_cache(model, shared_set, cells, tmp_path) -> None:  # noqa: ANN001
    alone = run_stream(model, shared_set, 2, tmp_path / "alone", share=False)
    alone_cells = torch.cat(cells)
    cells.clear()
    shared = run_stream(model, shared_set, 2, tmp_path / "shared")
    assert torch.equal(torch.cat(cells).sort().values, alone_cells.sort().values)
    assert [r["index"] for r in shared] == list(range(len(shared_set)))
    assert_same_records(shared, alone)
    assert_same_cache(tmp_path / "shared", tmp_path / "alone", len(shared_set))


# ------------------------------------------------------------------------------------ scoring, summary

def hand_made_meta() -> dict:
    """Two 200 x 100 (w x h) images letterboxed to 64: ratio 0.32, content 64 x 32, dw 0, dh 16."""
    return {
        # sample 0: x2 = 70 lies past the letterbox edge and is clamped to S - 1 = 63 (docs/behaviour.md §7)
        "boxes": torch.tensor([[40.0, 24.0, 70.0, 40.0], [16.0, 24.0, 32.0, 40.0]]),
        "letterbox": Letterbox.build([0.32, 0.32], [0.0, 0.0], [16.0, 16.0], [(100, 200), (100, 200)]),
        "index": [7, 8],
        "image_path": ["frames/a/000000.JPEG", "frames/a/000001.JPEG"],
        "phrase": ["the red circle", "the big square"],
    }


def test_score_boxes_scores_in_original_pixels_after_the_gt_round_trip() -> None:
    pred = torch.tensor([[125.0, 25.0, 200.0, 75.0], [50.0, 25.0, 150.0, 75.0]])
    records = score_boxes(pred, hand_made_meta(), SIZE)
    # gt: ((x - dw) / r, (y - dh) / r) of the clamped letterboxed box: 63 / 0.32 = 196.875
    assert records[0]["gt"] == pytest.approx([125.0, 25.0, 196.875, 75.0], abs=1e-3)
    assert records[1]["gt"] == pytest.approx([50.0, 25.0, 100.0, 75.0], abs=1e-3)
    assert records[0]["iou"] == pytest.approx(71.875 / 75, abs=1e-5)
    assert records[1]["iou"] == pytest.approx(0.5, abs=1e-5)
    assert [r["hit"] for r in records] == [True, False]  # IoU > 0.5, strictly
    assert records[0]["pred"] == [125.0, 25.0, 200.0, 75.0]
    assert {k: records[1][k] for k in ("index", "image", "phrase")} == \
        {"index": 8, "image": "frames/a/000001.JPEG", "phrase": "the big square"}
    assert "centre_hit" not in records[0]


def test_score_boxes_adds_centre_hit_and_frame_ids_when_given() -> None:
    meta = {**hand_made_meta(), "video": torch.tensor([3, 3]), "frame": torch.tensor([0, 1])}
    records = score_boxes(torch.zeros(2, 4), meta, SIZE, centre_hit=torch.tensor([True, False]))
    assert [(r["centre_hit"], r["video"], r["frame"]) for r in records] == [(True, 3, 0), (False, 3, 1)]


RECORDS = [{"hit": True, "iou": 0.8, "centre_hit": True}, {"hit": False, "iou": 0.2, "centre_hit": False},
           {"hit": True, "iou": 0.6, "centre_hit": False}]


def test_summarize_reports_accuracy_miou_and_centre_accuracy() -> None:
    summary = summarize(RECORDS)
    assert summary == pytest.approx({"count": 3, "accuracy": 2 / 3, "miou": 1.6 / 3, "centre_accuracy": 1 / 3})


def test_summarize_leaves_out_centre_accuracy_unless_every_record_has_it() -> None:
    without = [{k: v for k, v in r.items() if k != "centre_hit"} for r in RECORDS]
    assert summarize(without) == pytest.approx({"count": 3, "accuracy": 2 / 3, "miou": 1.6 / 3})
    assert "centre_accuracy" not in summarize([RECORDS[0], *without[1:]])


def test_summarize_of_nothing_is_nan() -> None:
    summary = summarize([])
    assert summary["count"] == 0 and math.isnan(summary["accuracy"]) and math.isnan(summary["miou"])
