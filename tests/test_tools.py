"""Index builders (tools/) on VID-Sentence and refer trees generated in tmp_path in the public schemas."""
from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tools import build_refcoco, build_vid_sentence
from tools.restricted_pickle import load_plain_pickle
from utils.io import UserInputError
from utils.word_utils import build_corpus, load_corpus, save_corpus

REPO = Path(__file__).resolve().parents[1]
TRAIN_DIR = "ILSVRC2015_VID_train_0000"

# video -> track id -> {frame (1-based): [x1, y1, x2, y2]}
TRAIN_TUBES = {
    f"{TRAIN_DIR}/ILSVRC2015_train_00000000": {
        "0": {1: [1, 2, 10, 12], 2: [2, 2, 11, 12], 3: [3, 2, 12, 12]},
        "1": {5: [4, 4, 8, 8], 2: [5, 5, 9, 9], 3: [6, 6, 10, 10]},  # gap at frame 4, listed out of order
    },
    f"{TRAIN_DIR}/ILSVRC2015_train_00001000": {"0": {1: [0, 0, 16, 12], 2: [1, 1, 15, 11]}},
}
TRAIN_VALID = [f"{TRAIN_DIR}/ILSVRC2015_train_00000000,0", f"{TRAIN_DIR}/ILSVRC2015_train_00000000,1",
               f"{TRAIN_DIR}/ILSVRC2015_train_00001000,0"]
TRAIN_ANN = ["0, A red car drives away", "1, the dog on the left", "1, A brown dog",
             "2, a cat, sitting still"]
TEST_TUBES = {"ILSVRC2015_val_00000000": {"0": {1: [0, 0, 5, 5]}, "1": {1: [2, 3, 9, 10], 2: [3, 3, 10, 10]}}}
TEST_VALID = ["ILSVRC2015_val_00000000,0", "ILSVRC2015_val_00000000,1"]
TEST_ANN = ["1, the zebra in front"]  # test tube 0 has no sentence


def write_jpeg(path: Path, h: int = 12, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def write_tubes(root: Path, split_dir: str, tubes: dict) -> None:
    for video, tracks in tubes.items():
        annotations = [{"id": track, "track": [{"frame": f, "bbox": box, "frame_size": [12, 16], "class": "x",
                                                "occluded": 0, "generated": 0} for f, box in frames.items()]}
                       for track, frames in tracks.items()]
        path = root / "Annotations" / "VID" / "tubeGt" / split_dir / f"{video}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"video": Path(video).name, "annotations": annotations}, indent=2))


@pytest.fixture()
def vid(tmp_path: Path) -> dict[str, Path]:
    """A VID-Sentence tree, the ImageNet-VID frames it needs, and an output folder."""
    root, frames = tmp_path / "VID-Sentence", tmp_path / "ILSVRC2015" / "Data" / "VID"
    ann = root / "Data" / "VID" / "annSamples"
    ann.mkdir(parents=True)
    for split, valid, sentences in (("train", TRAIN_VALID, TRAIN_ANN), ("test", TEST_VALID, TEST_ANN)):
        (ann / f"{split}_valid_list.txt").write_text("\n".join(valid) + "\n")
        (ann / f"{split}_ann_list_v2.txt").write_text("\n".join(sentences) + "\n")
    write_tubes(root, "train", TRAIN_TUBES)
    write_tubes(root, "val", TEST_TUBES)
    for split_dir, tubes in (("train", TRAIN_TUBES), ("val", TEST_TUBES)):
        for video, tracks in tubes.items():
            for frame in {f for track in tracks.values() for f in track}:
                write_jpeg(frames / split_dir / video / f"{frame - 1:06d}.JPEG")
    return {"root": root, "frames": frames, "out": tmp_path / "data" / "VID", "data": tmp_path / "data"}


def build_vid(vid: dict[str, Path], **kwargs) -> tuple[list, list]:
    build_vid_sentence.build(vid["root"], vid["frames"], vid["out"], **kwargs)
    return tuple(torch.load(vid["out"] / f"VID_video_level_{split}.pth", weights_only=True)
                 for split in ("train", "test"))


def frame_path(vid: dict[str, Path], split_dir: str, video: str, frame: int) -> str:
    return (vid["frames"] / split_dir / video / f"{frame - 1:06d}.JPEG").as_posix()


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_vid_one_video_per_sentence_with_frames_in_order(vid):
    train, _ = build_vid(vid)
    video = f"{TRAIN_DIR}/ILSVRC2015_train_00000000"
    assert [len(v) for v in train] == [3, 3, 3, 2]
    assert train[0] == [(frame_path(vid, "train", video, f), box, "A red car drives away")
                        for f, box in TRAIN_TUBES[video]["0"].items()]


def test_vid_track_gap_keeps_only_annotated_frames_sorted(vid):
    train, _ = build_vid(vid)
    video = f"{TRAIN_DIR}/ILSVRC2015_train_00000000"
    assert [frame[0] for frame in train[1]] == [frame_path(vid, "train", video, f) for f in (2, 3, 5)]
    assert [frame[1] for frame in train[1]] == [[5, 5, 9, 9], [6, 6, 10, 10], [4, 4, 8, 8]]


def test_vid_several_sentences_on_one_tube_give_several_videos(vid):
    train, _ = build_vid(vid)
    assert [frame[:2] for frame in train[1]] == [frame[:2] for frame in train[2]]
    assert {train[1][0][2], train[2][0][2]} == {"the dog on the left", "A brown dog"}


def test_vid_sentence_id_is_the_valid_list_line_and_commas_stay_in_the_sentence(vid):
    train, _ = build_vid(vid)
    video = f"{TRAIN_DIR}/ILSVRC2015_train_00001000"
    assert train[3] == [(frame_path(vid, "train", video, 1), [0, 0, 16, 12], "a cat, sitting still"),
                        (frame_path(vid, "train", video, 2), [1, 1, 15, 11], "a cat, sitting still")]


def test_vid_test_split_uses_val_frames_and_skips_tubes_without_sentence(vid):
    _, test = build_vid(vid)
    video = "ILSVRC2015_val_00000000"
    assert test == [[(frame_path(vid, "val", video, 1), [2, 3, 9, 10], "the zebra in front"),
                     (frame_path(vid, "val", video, 2), [3, 3, 10, 10], "the zebra in front")]]


def test_vid_corpus_is_built_from_train_sentences(vid):
    build_vid(vid)
    words = load_corpus(vid["out"] / "corpus.pth").dictionary.idx2word
    assert words[:3] == ["<pad>", "<unk>", "<eos>"]
    assert "dog" in words and "zebra" not in words


def test_vid_corpus_reuse_keeps_the_given_vocabulary(vid, tmp_path):
    given = build_corpus(["zebra giraffe"])
    given.dictionary.idx2word.remove("<eos>")  # released corpora may lack <eos>
    given.dictionary.word2idx = {w: i for i, w in enumerate(given.dictionary.idx2word)}
    save_corpus(given, tmp_path / "authors_corpus.pth")
    build_vid(vid, corpus_path=tmp_path / "authors_corpus.pth")
    copied = load_corpus(vid["out"] / "corpus.pth").dictionary
    assert copied.idx2word == ["<pad>", "<unk>", "zebra", "giraffe"]
    assert copied.word2idx == {"<pad>": 0, "<unk>": 1, "zebra": 2, "giraffe": 3}


def test_vid_missing_frames_are_refused_then_allowed(vid):
    lost = Path(frame_path(vid, "val", "ILSVRC2015_val_00000000", 2))
    lost.unlink()
    with pytest.raises(UserInputError, match="--allow_missing") as err:
        build_vid(vid)
    assert str(lost) in str(err.value)
    assert not vid["out"].exists()
    _, test = build_vid(vid, allow_missing=True)
    assert test[0][1][0] == str(lost)


def test_vid_rerun_is_a_noop_and_a_different_output_needs_force(vid):
    build_vid(vid)
    stamp = os.stat(vid["out"] / "VID_video_level_train.pth").st_mtime_ns
    build_vid(vid)
    assert os.stat(vid["out"] / "VID_video_level_train.pth").st_mtime_ns == stamp
    (vid["root"] / "Data/VID/annSamples/train_ann_list_v2.txt").write_text("0, a blue car\n")
    with pytest.raises(UserInputError, match="refusing to overwrite .*VID_video_level_train.pth"):
        build_vid(vid)
    train, _ = build_vid(vid, force=True)
    assert [v[0][2] for v in train] == ["a blue car"]


def test_vid_index_loads_through_vid_loader(vid):
    vid_loader = pytest.importorskip("dataset.vid_loader")
    build_vid(vid)
    corpus = load_corpus(vid["out"] / "corpus.pth")
    ds = vid_loader.VIDDataset(vid["data"], vid["data"], "VID", "train", corpus, image_size=32, num_frames=2)
    assert len(ds) == 11  # every frame of every video
    item = ds[4]  # video 1 (the gap track), frame 1 -> window (frame 0, frame 1)
    assert item["images"].shape == (2, 3, 32, 32)
    assert item["letterbox"].orig_size.tolist() == [[12, 16], [12, 16]]
    assert item["phrase"] == "the dog on the left"
    assert item["boxes"][1].tolist() == [12.0, 16.0, 20.0, 24.0]  # [6, 6, 10, 10] * 2 + (0, 4) letterbox


def test_vid_cli_reports_counts(vid):
    result = run_cli("tools.build_vid_sentence", "--vid_sentence_root", str(vid["root"]),
                     "--vid_frames_root", str(vid["frames"]), "--out", str(vid["out"]))
    assert result.returncode == 0, result.stderr
    assert "train: 3 tubes listed, 3 with a sentence, 4 sentences, 11 frames (6 distinct images, 0 missing)" \
        in result.stdout
    assert "test: 2 tubes listed, 1 with a sentence, 1 sentences, 2 frames (2 distinct images, 0 missing)" \
        in result.stdout


def test_vid_cli_malformed_tube_json_exits_2_naming_the_file(vid):
    bad = vid["root"] / "Annotations/VID/tubeGt/val/ILSVRC2015_val_00000000.js"
    bad.write_text('{"video": "ILSVRC2015_val_00000000", "annotations": [')
    result = run_cli("tools.build_vid_sentence", "--vid_sentence_root", str(vid["root"]),
                     "--vid_frames_root", str(vid["frames"]), "--out", str(vid["out"]))
    assert result.returncode == 2
    assert result.stderr.startswith("error: tube file") and str(bad) in result.stderr


def test_vid_missing_list_names_the_file(vid):
    (vid["root"] / "Data/VID/annSamples/test_valid_list.txt").unlink()
    with pytest.raises(UserInputError, match="tube list not found: .*test_valid_list.txt"):
        build_vid(vid)


def test_vid_sentence_id_past_the_tube_list_is_an_error(vid):
    (vid["root"] / "Data/VID/annSamples/test_ann_list_v2.txt").write_text("2, a zebra\n")
    with pytest.raises(UserInputError, match="test_ann_list_v2.txt line 1: tube id 2 is past the end"):
        build_vid(vid)


def test_vid_help_shows_the_folder_layout(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_vid_sentence.main(["--help"])
    assert exit_.value.code == 0
    assert "Annotations/VID/tubeGt/train/<video>.js" in capsys.readouterr().out


# ---- restricted unpickler ----

class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_pickle_loads_plain_protocol2_data(tmp_path):
    data = [{"ref_id": 3, "split": "testA", "box": (1.5, 2), "sentences": [{"sent": "a"}], "ok": True}, None]
    (tmp_path / "p.p").write_bytes(pickle.dumps(data, protocol=2))
    assert load_plain_pickle(tmp_path / "p.p", what="refs pickle") == data


def test_restricted_pickle_decodes_python2_byte_strings(tmp_path):
    # Python 2 `pickle.dumps({'sent': 'caf\xc3\xa9'}, 2)`: SHORT_BINSTRING (py2 str) keys and values
    (tmp_path / "p.p").write_bytes(b"\x80\x02}q\x00U\x04sentq\x01U\x05caf\xc3\xa9q\x02s.")
    assert load_plain_pickle(tmp_path / "p.p", what="refs pickle") == {"sent": "café"}


def test_restricted_pickle_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "p.p").write_bytes(pickle.dumps([_RunsCommand(marker)], protocol=2))
    with pytest.raises(UserInputError, match=r"global '\w+\.system' is not allowed"):
        load_plain_pickle(tmp_path / "p.p", what="refs pickle")
    assert not marker.exists()


def test_restricted_pickle_refuses_ordered_dict(tmp_path):
    (tmp_path / "p.p").write_bytes(pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    with pytest.raises(UserInputError, match=r"p\.p was refused .*'collections\.OrderedDict' is not allowed"):
        load_plain_pickle(tmp_path / "p.p", what="refs pickle")


def test_restricted_pickle_truncated_file_is_an_error(tmp_path):
    (tmp_path / "p.p").write_bytes(pickle.dumps([{"a": 1}], protocol=2)[:-3])
    with pytest.raises(UserInputError, match="p.p is truncated or not a plain-data pickle"):
        load_plain_pickle(tmp_path / "p.p", what="refs pickle")


# ---- refer (RefCOCO family) ----

def ref(ref_id: int, ann_id: int, image_id: int, split: str, sents: list[dict], **extra) -> dict:
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
            "sent_ids": list(range(len(sents))), "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            "sentences": sents, **extra}


REFS = [
    ref(10, 100, 1, "train", [{"sent": "man on left", "raw": "Man on left."}, {"sent": "guy", "raw": "guy"}]),
    ref(11, 101, 2, "val", [{"sent": "red car", "raw": "Red car"}]),
    ref(12, 102, 2, "testA", [{"raw": "the lady"}], att_wds=["lady"]),
    ref(13, 103, 3, "testB", [{"sent": "zebra", "raw": "zebra"}]),
]
ANNOTATIONS = [{"id": 100, "image_id": 1, "bbox": [1.5, 2.0, 10.0, 8.25], "category_id": 1},
               {"id": 101, "image_id": 2, "bbox": [0.0, 0.0, 6.0, 4.0], "category_id": 3},
               {"id": 102, "image_id": 2, "bbox": [3.0, 1.0, 5.0, 5.0], "category_id": 1},
               {"id": 103, "image_id": 3, "bbox": [2.0, 2.0, 4.0, 6.0], "category_id": 1},
               {"id": 999, "image_id": 3, "bbox": [0.0, 0.0, 1.0, 1.0], "category_id": 1}]


@pytest.fixture()
def refer(tmp_path: Path) -> Path:
    """A refer data folder with refcoco/refs(unc).p and refcocog/refs(umd).p (same refs, umd splits)."""
    for folder, name, refs in (("refcoco", "refs(unc).p", REFS),
                               ("refcocog", "refs(umd).p", [{**r, "split": s} for r, s in
                                                            zip(REFS, ["train", "val", "test", "test"])])):
        (tmp_path / "refer" / folder).mkdir(parents=True)
        (tmp_path / "refer" / folder / name).write_bytes(pickle.dumps(refs, protocol=2))
        (tmp_path / "refer" / folder / "instances.json").write_text(
            json.dumps({"images": [], "annotations": ANNOTATIONS, "categories": []}))
    return tmp_path / "refer"


def load_split(out: Path, dataset: str, split: str) -> list:
    return torch.load(out / f"{dataset}_{split}.pth", weights_only=True)


def test_refcoco_items_per_sentence_with_coco_box(refer, tmp_path):
    build_refcoco.build(refer, "unc", tmp_path / "unc")
    assert load_split(tmp_path / "unc", "unc", "train") == [
        ("COCO_train2014_000000000001.jpg", "10.npy", [1.5, 2.0, 10.0, 8.25], "man on left", []),
        ("COCO_train2014_000000000001.jpg", "10.npy", [1.5, 2.0, 10.0, 8.25], "guy", []),
    ]


def test_refcoco_splits_follow_the_ref_split_field_and_trainval_is_train_plus_val(refer, tmp_path):
    build_refcoco.build(refer, "unc", tmp_path / "unc")
    out = tmp_path / "unc"
    assert sorted(p.name for p in out.iterdir()) == ["corpus.pth", "unc_testA.pth", "unc_testB.pth",
                                                     "unc_train.pth", "unc_trainval.pth", "unc_val.pth"]
    assert load_split(out, "unc", "testA") == [
        ("COCO_train2014_000000000002.jpg", "12.npy", [3.0, 1.0, 5.0, 5.0], "the lady", ["lady"])]
    train, val = load_split(out, "unc", "train"), load_split(out, "unc", "val")
    assert load_split(out, "unc", "trainval") == train + val


def test_gref_items_are_image_box_phrase(refer, tmp_path):
    build_refcoco.build(refer, "gref", tmp_path / "gref")
    assert load_split(tmp_path / "gref", "gref", "test") == [
        ("COCO_train2014_000000000002.jpg", [3.0, 1.0, 5.0, 5.0], "the lady"),
        ("COCO_train2014_000000000003.jpg", [2.0, 2.0, 4.0, 6.0], "zebra")]
    assert not (tmp_path / "gref" / "gref_trainval.pth").exists()


def test_refcoco_corpus_from_train_or_given(refer, tmp_path):
    build_refcoco.build(refer, "unc", tmp_path / "unc")
    words = load_corpus(tmp_path / "unc" / "corpus.pth").dictionary.idx2word
    assert words == ["<pad>", "<unk>", "<eos>", "man", "on", "left", "guy"]
    save_corpus(build_corpus(["zebra"]), tmp_path / "given.pth")
    build_refcoco.build(refer, "unc", tmp_path / "unc", corpus_path=tmp_path / "given.pth", force=True)
    words = load_corpus(tmp_path / "unc" / "corpus.pth").dictionary.idx2word
    assert words == ["<pad>", "<unk>", "<eos>", "zebra"]


def test_refcoco_index_loads_through_refer_loader(refer, tmp_path):
    referit_loader = pytest.importorskip("dataset.referit_loader")
    build_refcoco.build(refer, "unc", tmp_path / "data" / "unc")
    for image_id in (1, 2, 3):
        write_jpeg(tmp_path / "other/images/mscoco/images/train2014" / f"COCO_train2014_{image_id:012d}.jpg",
                   h=20, w=40)
    corpus = load_corpus(tmp_path / "data" / "unc" / "corpus.pth")
    ds = referit_loader.ReferDataset(tmp_path, tmp_path / "data", "unc", "testB", corpus, image_size=40)
    item = ds[0]
    assert len(ds) == 1 and item["phrase"] == "zebra"
    assert item["boxes"].tolist() == [[2.0, 12.0, 6.0, 18.0]]  # xywh [2, 2, 4, 6] -> [2, 2, 6, 8] + (0, 10) pad


def test_refcoco_unknown_ann_id_names_the_ref(refer, tmp_path):
    (refer / "refcoco" / "instances.json").write_text(json.dumps({"annotations": ANNOTATIONS[1:]}))
    with pytest.raises(UserInputError, match="ref_id 10 names ann_id 100, which is not in instances.json"):
        build_refcoco.build(refer, "unc", tmp_path / "unc")


def test_refcoco_refs_with_foreign_global_are_refused(refer, tmp_path):
    (refer / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    with pytest.raises(UserInputError, match=r"refs\(unc\)\.p was refused"):
        build_refcoco.build(refer, "unc", tmp_path / "unc")


def test_refcoco_cli_missing_refs_pickle_exits_2(refer, tmp_path):
    result = run_cli("tools.build_refcoco", "--refer_root", str(refer), "--dataset", "unc+",
                     "--out", str(tmp_path / "unc+"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: refs pickle not found: {refer / 'refcoco+' / 'refs(unc).p'}"


def test_refcoco_cli_malformed_instances_exits_2(refer, tmp_path):
    (refer / "refcoco" / "instances.json").write_text("{not json")
    result = run_cli("tools.build_refcoco", "--refer_root", str(refer), "--dataset", "unc",
                     "--out", str(tmp_path / "unc"))
    assert result.returncode == 2
    instances = refer / "refcoco" / "instances.json"
    assert result.stderr.startswith(f"error: instances file {instances} is not valid JSON")
    assert not (tmp_path / "unc").exists()


def test_refcoco_help_shows_the_folder_layout(capsys):
    with pytest.raises(SystemExit):
        build_refcoco.main(["--help"])
    assert "refcocog/refs(umd).p" in capsys.readouterr().out
