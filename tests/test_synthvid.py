"""The synthetic video set: layout and formats, determinism, expression validity, idempotent writing."""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.synthvid import (
    DEGRADATIONS,
    KINDS,
    MANIFEST,
    SPLITS,
    VISIBLE_MIN,
    ClipObjects,
    HardFrames,
    SynthConfig,
    check_expression,
    degradations_path,
    generate,
    load_clips,
    parse_phrase,
    render_phrase,
)
from dataset.synthvid.cli import main
from dataset.synthvid.hard import plan_frames
from utils.io import UserInputError, safe_load
from utils.transforms import swap_left_right
from utils.word_utils import UNK_TOKEN, load_corpus

TINY = SynthConfig(seed=7, train_videos=5, val_videos=2, test_videos=3, min_frames=5, max_frames=7,
                   expressions_per_video=2, image_stride=2)
HARD = replace(TINY, hard_frames=HardFrames(motion_blur=0.3, occlusion=0.3, defocus=0.3, low_light=0.3))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthvid")
    assert generate(out, TINY) is True
    return out


@pytest.fixture(scope="module")
def hard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthvid_hard")
    assert generate(out, HARD) is True
    return out


def _entries(root: Path, split: str) -> list[dict]:
    return json.loads((root / "VID" / f"expressions_{split}.json").read_text())


def _videos(root: Path, split: str) -> list:
    return safe_load(root / "VID" / f"VID_video_level_{split}.pth", what="index file")


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(root: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", TINY, workers=2)
    again, first = _all_files(tmp_path / "again"), _all_files(root)
    assert sorted(again) == sorted(first)
    assert [name for name in first if first[name] != again[name]] == []


def test_another_seed_gives_other_data(root: Path, tmp_path: Path) -> None:
    generate(tmp_path / "other", replace(TINY, seed=8))
    assert (tmp_path / "other/VID/VID_video_level_train.pth").read_bytes() != \
        (root / "VID/VID_video_level_train.pth").read_bytes()


def test_video_index_layout_and_types(root: Path) -> None:
    for split in SPLITS:
        videos, entries = _videos(root, split), _entries(root, split)
        assert len(videos) == TINY.videos(split) * TINY.expressions_per_video == len(entries)
        for video, entry in zip(videos, entries):
            assert len(video) == entry["num_frames"] and TINY.min_frames <= len(video) <= TINY.max_frames
            for t, (path, box, phrase) in enumerate(video):
                assert isinstance(path, str) and isinstance(phrase, str) and phrase == entry["phrase"]
                assert path == f"frames/{split}/{entry['video']}/{t:06d}.JPEG"
                assert isinstance(box, list) and len(box) == 4 and all(type(v) is float for v in box)
                h, w = cv2.imread(str(root / path)).shape[:2]
                assert 160 <= w <= 256 and 112 <= h <= 224
                assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h


def test_one_entry_per_clip_and_expression_with_distinct_targets(root: Path) -> None:
    entries = _entries(root, "train")
    clips = [e["video"] for e in entries]
    assert clips == sorted(clips) and len(set(clips)) == TINY.train_videos
    for name in set(clips):
        targets = [e["target"] for e in entries if e["video"] == name]
        assert len(targets) == TINY.expressions_per_video == len(set(targets))


def test_image_export_matches_video_boxes_every_stride_frames(root: Path) -> None:
    for split in SPLITS:
        items = safe_load(root / "synthvid" / f"synthvid_{split}.pth", what="index file")
        expected = [(path, box, phrase, entry["types"])
                    for video, entry in zip(_videos(root, split), _entries(root, split))
                    for path, box, phrase in video[::TINY.image_stride]]
        assert len(items) == len(expected)
        for (image, mask, xywh, phrase, attributes), (path, box, phrase2, types) in zip(items, expected):
            assert (image, mask, phrase, attributes) == (path, "", phrase2, types)
            assert all(type(v) is float for v in xywh)
            assert np.allclose(xywh, [box[0], box[1], box[2] - box[0], box[3] - box[1]])
    assert (root / "synthvid/corpus.pth").read_bytes() == (root / "VID/corpus.pth").read_bytes()


def test_expressions_json_describes_each_entry(root: Path) -> None:
    for split in SPLITS:
        objects = {r["video"]: r for r in json.loads((root / "VID" / f"objects_{split}.json").read_text())}
        for entry in _entries(root, split):
            assert set(entry["types"]) <= set(KINDS) and entry["kind"] in entry["types"]
            assert entry["types"] == [k for k in KINDS if k in entry["types"]]
            assert 0 <= entry["target"] < len(objects[entry["video"]]["objects"])
            assert entry["num_frames"] == objects[entry["video"]]["num_frames"]


def test_type_mix_follows_the_parameter(root: Path) -> None:
    kinds = [e["kind"] for e in _entries(root, "train")]
    # 10 expressions at 0.4/0.3/0.3 -> 4/3/3 exactly (largest remainder).
    assert [kinds.count(k) for k in KINDS] == [4, 3, 3]


def test_every_expression_denotes_only_its_target_in_every_frame(root: Path) -> None:
    for split in SPLITS:
        clips = load_clips(root, split)
        for entry in _entries(root, split):
            clip = clips[entry["video"]]
            assert check_expression(entry["phrase"], clip, entry["target"], entry["reference"]) == []
            assert clip.visible[entry["target"]].min() >= VISIBLE_MIN


def test_check_expression_rejects_an_ambiguous_phrase(root: Path) -> None:
    # The target's shape alone always names a look-alike too.
    entry = _entries(root, "test")[0]
    clip = load_clips(root, "test")[entry["video"]]
    bare = f"the {clip.shapes[entry['target']]}"
    assert any("does not denote only" in p for p in check_expression(bare, clip, entry["target"]))


def _clip(shapes: list[str], colours: list[str], boxes: list[list[list[float]]]) -> ClipObjects:
    return ClipObjects(tuple(shapes), tuple(colours), ("small",) * len(shapes), np.array(boxes, dtype=np.float64),
                       np.ones((len(shapes), len(boxes[0]))))


def _still(x: float, frames: int = 3) -> list[list[float]]:
    return [[x, 40.0, x + 20.0, 60.0]] * frames


def _moving(x: float, dx: float, frames: int = 3) -> list[list[float]]:
    return [[x + t * dx, 40.0, x + t * dx + 20.0, 60.0] for t in range(frames)]


def test_relation_holds_with_a_margin_against_every_look_alike() -> None:
    # Square centre x = 60, margin = 0.5 * 20 = 10: circles at centre 20 (left) and 110 (right).
    clip = _clip(["circle", "circle", "square"], ["red", "red", "blue"], [_still(10), _still(100), _still(50)])
    assert check_expression("the circle left of the square", clip, 0, 2) == []
    assert check_expression("the circle right of the blue square", clip, 1, 2) == []
    # The look-alike at centre 63 is right of the square by less than the margin: ambiguous.
    close = replace(clip, boxes=np.array([_still(10), _still(53), _still(50)], dtype=np.float64))
    assert any("does not denote only" in p for p in check_expression("the circle left of the square", close, 0))


def test_motion_tells_moving_from_still_but_direction_never_disambiguates() -> None:
    moving_and_still = _clip(["circle", "circle"], ["red", "red"], [_moving(10, 3.0), _still(100)])
    assert check_expression("the moving red circle", moving_and_still, 0) == []
    assert check_expression("the red circle moving right", moving_and_still, 0) == []
    assert check_expression("the circle that is not moving", moving_and_still, 1) == []
    assert any("not moving left" in p for p in check_expression("the circle moving left", moving_and_still, 0))
    # Left vs right movers: the co-attention is symmetric in time, so this must be rejected.
    opposite = _clip(["circle", "circle"], ["red", "red"], [_moving(10, 3.0), _moving(100, -3.0)])
    assert any("does not denote only" in p for p in check_expression("the circle moving right", opposite, 0))


def test_attribute_phrase_must_be_a_smallest_description() -> None:
    clip = _clip(["circle", "circle", "square"], ["red", "blue", "red"], [_still(10), _still(60), _still(110)])
    assert check_expression("the red circle", clip, 0) == []
    assert any("singles out" in p for p in check_expression("the square", clip, 2))
    big = replace(clip, sizes=("big", "small", "small"))
    assert any("smallest" in p for p in check_expression("the big red circle", big, 0))


def test_motion_expressions_separate_moving_from_still_look_alikes(root: Path) -> None:
    checked = 0
    for split in SPLITS:
        records = {r["video"]: r for r in json.loads((root / "VID" / f"objects_{split}.json").read_text())}
        for entry in (e for e in _entries(root, split) if "motion" in e["types"]):
            objects = records[entry["video"]]["objects"]
            query, target = parse_phrase(entry["phrase"]), objects[entry["target"]]
            assert target["moving"] == (query.motion == "moving")
            alike = [o for o in objects if o is not target and o["shape"] == target["shape"]
                     and query.colour in (None, o["colour"]) and query.size in (None, o["size"])]
            assert alike and all(o["moving"] != target["moving"] for o in alike)
            checked += 1
    assert checked > 0


def test_velocity_is_the_box_centre_displacement(root: Path) -> None:
    record = json.loads((root / "VID/objects_train.json").read_text())[0]
    for obj in record["objects"]:
        box = np.array(obj["box"])
        step = np.diff((box[:, :2] + box[:, 2:]) / 2, axis=0)
        assert np.allclose(np.array(obj["velocity"])[:-1], step, atol=0.011)
        assert obj["moving"] == bool(np.linalg.norm(step, axis=1).mean() >= 1.0)


def test_flipped_samples_stay_correct(root: Path) -> None:
    # A horizontal flip mirrors the boxes and swaps left/right in the phrase (utils.transforms).
    records = json.loads((root / "VID/objects_test.json").read_text())
    clips = {r["video"]: ClipObjects.from_record(r) for r in records}
    widths = {r["video"]: r["width"] for r in records}
    for entry in _entries(root, "test"):
        clip = clips[entry["video"]]
        mirrored = replace(clip, boxes=np.stack([widths[entry["video"]] - clip.boxes[..., 2], clip.boxes[..., 1],
                                                 widths[entry["video"]] - clip.boxes[..., 0], clip.boxes[..., 3]], -1))
        flipped = swap_left_right(entry["phrase"])
        assert check_expression(flipped, mirrored, entry["target"], entry["reference"]) == []


def test_corpus_pads_with_zero_and_knows_every_phrase(root: Path) -> None:
    corpus = load_corpus(root / "VID" / "corpus.pth")
    assert corpus.dictionary.idx2word[0] == "<pad>"
    unk = corpus.dictionary.word2idx[UNK_TOKEN]
    for split in SPLITS:
        for entry in _entries(root, split):
            for phrase in (entry["phrase"], swap_left_right(entry["phrase"])):
                ids = corpus.tokenize(phrase, 20)
                assert unk not in ids.tolist() and int((ids != 0).sum()) == len(phrase.split()) + 1


def test_phrases_round_trip_through_the_parser() -> None:
    for phrase in ("the big red circle", "the circle left of the blue square", "the square below the triangle",
                   "the red circle moving left", "the moving triangle", "the still small star",
                   "the green cross that is not moving"):
        query = parse_phrase(phrase)
        assert render_phrase(query, alternative="that is" in phrase) == phrase
    with pytest.raises(ValueError, match="shape"):
        parse_phrase("the red")


def test_rerun_with_same_parameters_does_nothing(root: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert generate(root, TINY) is False
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


def test_foreign_folder_is_refused_without_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="--force"):
        generate(tmp_path, TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert generate(tmp_path, TINY, force=True) is True
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / MANIFEST).is_file()


def test_set_with_other_parameters_is_refused(root: Path) -> None:
    with pytest.raises(UserInputError, match="other parameters"):
        generate(root, replace(TINY, seed=8))


def test_incomplete_set_is_refused(tmp_path: Path) -> None:
    generate(tmp_path, TINY)
    (tmp_path / "frames/val/vid_00001/000002.JPEG").unlink()
    with pytest.raises(UserInputError, match="incomplete"):
        generate(tmp_path, TINY)


def test_cli_reports_a_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data.bin").write_bytes(b"x")
    assert main(["--out", str(tmp_path), "--train_videos", "1", "--val_videos", "1", "--test_videos", "1"]) == 2
    assert re.search(r"error: synthvid output .* --force", capsys.readouterr().err)


def test_runs_as_a_module(tmp_path: Path) -> None:
    """``python -m dataset.synthvid`` is the package's command line (dataset/synthvid/__main__.py)."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "dataset.synthvid", "--out", str(tmp_path / "o"), "--frames", "8", "4"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    assert done.returncode == 2 and "--frames needs 2 <= MIN <= MAX" in done.stderr


def test_cli_rejects_bad_frames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path / "o"), "--frames", "8", "4"]) == 2
    assert "--frames" in capsys.readouterr().err


def test_loads_through_the_video_and_image_loaders(root: Path) -> None:
    from dataset.referit_loader import ReferDataset
    from dataset.vid_loader import VIDDataset

    corpus = load_corpus(root / "VID" / "corpus.pth")
    videos = VIDDataset(data_root=root, split_root=root, dataset="VID", split="test", corpus=corpus,
                        image_size=128, num_frames=5)
    assert len(videos) == sum(len(v) for v in _videos(root, "test"))
    item = videos[0]
    assert item["images"].shape == (5, 3, 128, 128) and item["boxes"].shape == (5, 4)
    assert torch.all((item["boxes"] >= 0) & (item["boxes"] <= 127))
    images = ReferDataset(data_root=root, split_root=root, dataset="synthvid", split="train", corpus=corpus,
                          image_size=128)
    assert images[0]["images"].shape == (1, 3, 128, 128) and images[0]["boxes"].shape == (1, 4)


def _digest(root: Path, jpeg: bool) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix == ".JPEG") == jpeg):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_default_set_is_pinned(root: Path) -> None:
    """The default set (hard frames off) as generated before hard frames existed; frames pin the JPEG encoder too."""
    assert len([p for p in root.rglob("*") if p.is_file()]) == 78
    assert _digest(root, jpeg=False) == "c58fe6d0fd71c8ddaf3a6a18f450a271014b561877b07d2e294fcdb6d4fe2021"
    assert _digest(root, jpeg=True) == "ff7221868e6af5570dfc59586dec0bbbdc5c7aa670c73566a8aadb43e5e80858"
    assert not list((root / "VID").glob("degradations_*")) and "hard_frames" not in json.loads(
        (root / MANIFEST).read_text())["config"]


def _labels(root: Path, split: str) -> dict[str, list[str]]:
    return json.loads(degradations_path(root, split).read_text())


def test_degradation_labels_name_exactly_the_indexed_frames(hard_root: Path) -> None:
    for split in SPLITS:
        labels = _labels(hard_root, split)
        assert set(labels) == {path for video in _videos(hard_root, split) for path, _, _ in video}
        images = safe_load(hard_root / "synthvid" / f"synthvid_{split}.pth", what="index file")
        assert {item[0] for item in images} <= set(labels)  # the image-level export reads the same files
        assert all(names == sorted(set(names)) and set(names) <= set(DEGRADATIONS) for names in labels.values())
    counts = json.loads((hard_root / MANIFEST).read_text())["counts"]["train"]["degraded_frames"]
    assert counts["any"] == sum(bool(n) for n in _labels(hard_root, "train").values()) > 0


def test_clean_frames_of_a_hard_set_are_the_default_frames(root: Path, hard_root: Path) -> None:
    for split in SPLITS:
        for path, names in _labels(hard_root, split).items():
            same = (hard_root / path).read_bytes() == (root / path).read_bytes()
            assert same == (not names), path
        objects = f"VID/objects_{split}.json"
        assert (hard_root / objects).read_bytes() == (root / objects).read_bytes()
        assert _videos(hard_root, split) == _videos(root, split)  # true boxes, occluded or not


def _frames_with(root: Path, hard_root: Path, only: str) -> list[tuple[np.ndarray, np.ndarray, str]]:
    found = [(cv2.imread(str(hard_root / path)).astype(np.float32), cv2.imread(str(root / path)).astype(np.float32),
              path) for split in SPLITS for path, names in _labels(hard_root, split).items() if names == [only]]
    assert found, only
    return found


def _detail(image: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.GaussianBlur(image, (0, 0), 0.8), cv2.CV_32F)).mean())


def test_defocused_frames_lose_detail(root: Path, hard_root: Path) -> None:
    for hard, clean, path in _frames_with(root, hard_root, "defocus"):
        assert _detail(hard) < 0.6 * _detail(clean), path


def test_motion_blurred_frames_lose_detail_where_objects_move(root: Path, hard_root: Path) -> None:
    for hard, clean, path in _frames_with(root, hard_root, "motion_blur"):
        changed = np.abs(hard - clean).max(axis=2) > 12
        assert changed.any() and _detail(hard) < _detail(clean), path


def test_low_light_frames_are_darker(root: Path, hard_root: Path) -> None:
    for hard, clean, path in _frames_with(root, hard_root, "low_light"):
        assert hard.mean() < 0.4 * clean.mean(), path


def test_occlusion_covers_a_large_part_of_every_target_box(root: Path, hard_root: Path) -> None:
    checked = 0
    for split in SPLITS:
        labels = _labels(hard_root, split)
        for video in _videos(hard_root, split):
            for path, box, _ in video:
                if labels[path] != ["occlusion"]:
                    continue
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                hard, clean = (cv2.imread(str(r / path)).astype(np.float32)[y1:y2, x1:x2] for r in (hard_root, root))
                changed = float((np.abs(hard - clean).max(axis=2) > 20).mean())
                assert 0.25 < changed < 0.8, (path, changed)
                checked += 1
    assert checked > 0


def _moving_clip(frames: int) -> ClipObjects:
    boxes = np.array([_moving(10, 3.0, frames), _still(100, frames)], dtype=np.float64)
    return ClipObjects(("circle", "square"), ("red", "blue"), ("small", "small"), boxes, np.ones((2, frames)))


def test_rates_are_per_frame_and_events_are_sparse() -> None:
    hard = HardFrames(motion_blur=0.1, occlusion=0.1, occlusion_frames=3, defocus=0.1, low_light=0.1)
    plans = plan_frames(hard, _moving_clip(4000), [0, 1], 400, 200, np.random.default_rng(0))
    labels = [p.labels() for p in plans]
    eligible = [t for t in range(len(labels)) if t == 0 or not labels[t - 1]]  # a frame that may start an event
    for name in ("motion_blur", "defocus", "low_light"):
        assert sum(name in labels[t] for t in eligible) / len(eligible) == pytest.approx(0.1, abs=0.02)
    assert sum("occlusion" in labels[t] for t in eligible) / len(eligible) == pytest.approx(0.1, abs=0.02)
    runs = [len(list(run)) for degraded, run in itertools.groupby(bool(n) for n in labels) if degraded]
    assert set(runs) == {1, 2, 3}  # single frames, occlusions up to 3 frames, then a clean frame
    assert sum(bool(n) for n in labels) / len(labels) == pytest.approx(0.3, abs=0.06)


def test_motion_blur_needs_a_moving_object() -> None:
    still = replace(_moving_clip(50), boxes=np.array([_still(10, 50), _still(100, 50)], dtype=np.float64))
    plans = plan_frames(HardFrames(motion_blur=1.0), still, [0], 400, 200, np.random.default_rng(0))
    assert all(p.labels() == [] for p in plans)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--motion_blur", "1.5", "--motion_blur is a rate per frame and must be in 0..1, got 1.5"),
    ("--occlusion", "-0.1", "--occlusion is a rate per frame and must be in 0..1, got -0.1"),
    ("--occlusion_frames", "0", "--occlusion_frames must be in 1..10, got 0"),
    ("--occlusion_cover", "0.7 0.4", "--occlusion_cover needs 0 < MIN <= MAX < 1, got [0.7, 0.4]"),
    ("--defocus_sigma", "0", "--defocus_sigma must be in (0, 20] pixels, got 0.0"),
    ("--low_light_gain", "2", "--low_light_gain must be in (0, 1], got 2.0"),
])
def test_cli_rejects_bad_hard_frame_options(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str,
                                            message: str) -> None:
    assert main(["--out", str(tmp_path / "o"), flag, *value.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o").exists()
