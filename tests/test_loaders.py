"""VIDDataset and ReferDataset on tiny index files written in tmp_path (docs/behaviour.md §1, 2, 6, 7)."""
import copy
import random
import shutil
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset.common import default_corpus_path, read_rgb
from dataset.referit_loader import ReferDataset
from dataset.vid_loader import VIDDataset
from utils.io import UserInputError
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.windows import window_indices
from utils.word_utils import build_corpus, load_corpus, save_corpus

FIXTURES = Path(__file__).parent / "fixtures"
SENTENCES = ["the dog on the left", "a red car", "the man on the right"]
MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def grey(level: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def half_lit(w: int = 64, h: int = 48) -> np.ndarray:
    """Dark left half, bright right half: tells whether a frame was mirrored."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[:, w // 2:] = 220
    return img


def write_vid(root: Path, videos: list[list[tuple[np.ndarray, list, str]]], split: str = "test",
              dataset: str = "VID") -> Path:
    """Write frames under root/data/Data and the index under root/split/<dataset>; paths relative to root/data."""
    index = []
    for v, video in enumerate(videos):
        frames = []
        for t, (img, box, phrase) in enumerate(video):
            rel = f"Data/VID/vid{v:02d}/{t:06d}.JPEG"
            (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / "data" / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 100])
            frames.append((rel, box, phrase))
        index.append(frames)
    folder = root / "split" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(index, folder / f"{dataset}_video_level_{split}.pth")
    save_corpus(build_corpus(SENTENCES), folder / "corpus.pth")
    return folder / f"{dataset}_video_level_{split}.pth"


def vid(root: Path, split: str = "test", **kwargs) -> VIDDataset:
    return VIDDataset(root / "data", root / "split", "VID", split, build_corpus(SENTENCES), **kwargs)


def levels(images: torch.Tensor) -> list[float]:
    """Mean grey level (0-255) of each frame of (T, 3, S, S) normalised images, centre crop only."""
    pixels = (images * STD + MEAN) * 255
    return pixels[:, :, 100:156, 100:156].mean(dim=(1, 2, 3)).tolist()


def write_refer(root: Path, dataset: str, items: list, images: dict[str, np.ndarray], image_dir: str,
                split: str = "val") -> None:
    for name, img in images.items():
        (root / "data" / image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data" / image_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (root / "split" / dataset).mkdir(parents=True, exist_ok=True)
    torch.save(items, root / "split" / dataset / f"{dataset}_{split}.pth")


def refer(root: Path, dataset: str, split: str = "val", **kwargs) -> ReferDataset:
    return ReferDataset(root / "data", root / "split", dataset, split, build_corpus(SENTENCES), **kwargs)


@pytest.mark.parametrize("t, n, k, expected", [
    (0, 10, 2, [0, 0]), (5, 10, 2, [4, 5]), (9, 10, 2, [8, 9]),
    (0, 10, 5, [0, 0, 0, 1, 2]), (1, 10, 5, [0, 0, 1, 2, 3]), (4, 10, 5, [2, 3, 4, 5, 6]),
    (9, 10, 5, [7, 8, 9, 9, 9]), (0, 1, 2, [0, 0]), (0, 1, 5, [0, 0, 0, 0, 0]),
])
def test_window_indices_clip_at_video_boundaries(t, n, k, expected):
    assert window_indices(t, n, k) == expected


def test_every_frame_of_every_video_is_a_sample_in_order(tmp_path):
    write_vid(tmp_path, [[(grey(10), [0, 0, 5, 5], "a red car")] * 3, [(grey(10), [0, 0, 5, 5], "a red car")] * 2])
    ds = vid(tmp_path, num_frames=5)
    assert ds.samples == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)] and len(ds) == 5
    assert [len(video) for video in ds.videos] == [3, 2]


def test_liotb_uses_its_own_folder_through_the_same_class(tmp_path):
    write_vid(tmp_path, [[(grey(10 + 40 * t), [8, 4, 40, 30], "a red car") for t in range(2)]], dataset="LiOTB")
    ds = VIDDataset(tmp_path / "data", tmp_path / "split", "LiOTB", "test", build_corpus(SENTENCES))
    assert ds.index_path == tmp_path / "split" / "LiOTB" / "LiOTB_video_level_test.pth"
    np.testing.assert_allclose(levels(ds[1]["images"]), [10, 50], atol=2)


def test_eval_window_item_layout_and_letterboxed_box(tmp_path):
    write_vid(tmp_path, [[(grey(10 + 40 * t), [8.7, 4.2, 40.9, 30.5], "a red car") for t in range(4)]])
    item = vid(tmp_path, num_frames=5)[1]
    assert set(item) == {"images", "word_id", "boxes", "letterbox", "index", "phrase", "image_path"}
    assert item["images"].shape == (5, 3, 256, 256) and item["images"].dtype == torch.float32
    assert item["word_id"].shape == (20,) and item["word_id"].dtype == torch.long
    # frames 0, 0, 1, 2, 3 of a 4-frame video around t = 1 (grey levels 10 + 40 t)
    np.testing.assert_allclose(levels(item["images"]), [10, 10, 50, 90, 130], atol=2)
    # 64x48 frame: ratio 4, dw 0, dh 32; box cast to int [8, 4, 40, 30] first
    expected_box = torch.tensor([32.0, 48.0, 160.0, 152.0])
    assert torch.equal(item["boxes"], expected_box.expand(5, 4))
    letterbox = item["letterbox"]
    assert torch.equal(letterbox.ratio, torch.full((5,), 4.0)) and torch.equal(letterbox.dh, torch.full((5,), 32.0))
    assert torch.equal(letterbox.dw, torch.zeros(5))
    assert torch.equal(letterbox.orig_size, torch.tensor([[48, 64]] * 5))
    assert item["index"] == 1 and item["image_path"] == "Data/VID/vid00/000001.JPEG"


def test_training_pair_is_previous_and_current_frame(tmp_path):
    write_vid(tmp_path, [[(grey(10 + 40 * t), [8, 4, 40, 30], "a red car") for t in range(3)]])
    ds = vid(tmp_path, num_frames=2)
    np.testing.assert_allclose(levels(ds[0]["images"]), [10, 10], atol=2)
    np.testing.assert_allclose(levels(ds[2]["images"]), [50, 90], atol=2)


def test_single_frame_video_repeats_its_frame(tmp_path):
    write_vid(tmp_path, [[(grey(90), [1, 2, 30, 40], "a red car")]])
    item = vid(tmp_path, num_frames=5)[0]
    assert len(vid(tmp_path, num_frames=5)) == 1
    np.testing.assert_allclose(levels(item["images"]), [90] * 5, atol=2)


def test_sample_phrase_is_the_centre_frames_lower_cased(tmp_path):
    phrases = ["a red car", "The DOG on the LEFT.", "the man on the right"]
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], p) for p in phrases]])
    ds = vid(tmp_path, num_frames=2)
    item = ds[1]
    corpus = build_corpus(SENTENCES)
    ids = [corpus.dictionary.word2idx[w] for w in ["the", "dog", "on", "the", "left", "<eos>"]]
    assert item["phrase"] == "the dog on the left."
    assert item["word_id"].tolist() == ids + [0] * 14
    assert ds.videos[0][1][2] == "The DOG on the LEFT."


def test_max_query_len_truncates_and_unknown_words_map_to_unk(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a purple car")]])
    item = vid(tmp_path, max_query_len=2)[0]
    corpus = build_corpus(SENTENCES)
    assert item["word_id"].tolist() == [corpus.dictionary.word2idx["a"], corpus.dictionary.word2idx["<unk>"]]


def test_per_frame_dataset_matches_window_centres(tmp_path):
    write_vid(tmp_path, [[(grey(10 + 40 * t), [8, 4, 40, 30], "a red car") for t in range(3)],
                         [(grey(200), [1, 2, 30, 40], "the man on the right")]])
    windows = vid(tmp_path, num_frames=5)
    frames = windows.sequence_frames(range(2))
    assert len(frames) == 4
    for i in range(4):
        item, window = frames[i], windows[i]
        (query,) = item["queries"]
        assert (item["sequence"], item["frame"]) == windows.samples[i] == (query["video"], query["frame"])
        assert item["image"].shape == (3, 256, 256)
        assert torch.equal(item["image"], window["images"][2])
        assert torch.equal(query["boxes"], window["boxes"][2])
        assert all(torch.equal(a, b) for a, b in zip(query["letterbox"], window["letterbox"].select(2)))
        assert torch.equal(query["word_id"], window["word_id"]) and query["image_path"] == window["image_path"]
        assert query["index"] == i


def test_index_entries_over_the_same_frames_share_one_decoded_frame(tmp_path):
    index_path = write_vid(tmp_path, [[(grey(10 + 40 * t), [8, 4, 40, 30], "a red car") for t in range(3)],
                                      [(grey(200), [1, 2, 30, 40], "the man on the right")]])
    index = torch.load(index_path)
    torch.save(index + [[(path, [1, 2, 20, 20], "the man") for path, _, _ in index[0]]], index_path)
    windows = vid(tmp_path, num_frames=5)
    shared = windows.sequence_frames(range(3))
    assert shared.sequences == [[0, 2], [1]]
    assert [(item["sequence"], item["frame"], [q["index"] for q in item["queries"]]) for item in shared] == [
        (0, 0, [0, 4]), (0, 1, [1, 5]), (0, 2, [2, 6]), (1, 0, [3])]
    assert torch.equal(shared[0]["queries"][1]["boxes"], windows[4]["boxes"][2])
    assert [len(item["queries"]) for item in windows.sequence_frames(range(3), share=False)] == [1] * 7


def test_frame_size_reads_the_header(tmp_path):
    write_vid(tmp_path, [[(grey(10, w=50, h=30), [1, 2, 30, 20], "a red car"),
                          (grey(10, w=40, h=70), [1, 2, 30, 20], "a red car")]])
    ds = vid(tmp_path)
    assert ds.frame_size(0, 0) == (30, 50) and ds.frame_size(0, 1) == (70, 40)


def test_training_pair_shares_one_flip_decision(tmp_path):
    write_vid(tmp_path, [[(half_lit(), [2, 5, 20, 40], "the dog on the left")] * 2])
    flips = set()
    for seed in range(16):
        item = vid(tmp_path, num_frames=2, augment=True, rng=random.Random(seed))[1]
        pixels = item["images"] * STD + MEAN  # (2, 3, S, S) in [0, 1]
        mirrored = [bool(f[:, 96:160, 20:80].mean() > f[:, 96:160, 176:236].mean()) for f in pixels]
        box_right = [bool(b[0] + b[2] > 256) for b in item["boxes"]]
        assert mirrored[0] == mirrored[1] == box_right[0] == box_right[1]
        assert item["phrase"] == ("the dog on the right" if mirrored[0] else "the dog on the left")
        flips.add(mirrored[0])
    assert flips == {True, False}


def test_augmentation_is_reproducible_with_a_seeded_rng(tmp_path):
    write_vid(tmp_path, [[(half_lit(), [2, 5, 20, 40], "the dog on the left")] * 2])
    a = vid(tmp_path, augment=True, rng=random.Random(3))[1]
    b = vid(tmp_path, augment=True, rng=random.Random(3))[1]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["boxes"], b["boxes"])


def test_index_is_not_mutated_across_two_epochs(tmp_path):
    write_vid(tmp_path, [[(half_lit(), [2.5, 5, 20, 40], "The dog on the LEFT")] * 3])
    ds = vid(tmp_path, num_frames=2, augment=True, rng=random.Random(0))
    stored = copy.deepcopy(ds.videos)
    loader = DataLoader(ds, batch_size=2, num_workers=0)
    epochs = [[batch["word_id"] for batch in loader] for _ in range(2)]
    assert ds.videos == stored
    assert all(w.shape == (2, 20) or w.shape == (1, 20) for epoch in epochs for w in epoch)


def test_default_collate_batches_windows(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")] * 3])
    batch = next(iter(DataLoader(vid(tmp_path, num_frames=5), batch_size=3)))
    assert batch["images"].shape == (3, 5, 3, 256, 256) and batch["boxes"].shape == (3, 5, 4)
    assert batch["word_id"].shape == (3, 20) and batch["index"].tolist() == [0, 1, 2]
    assert batch["phrase"] == ["a red car"] * 3


def test_image_paths_resolve_relative_to_the_cwd_first(tmp_path, monkeypatch):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")]])
    monkeypatch.chdir(tmp_path / "data")
    ds = VIDDataset(tmp_path / "elsewhere", tmp_path / "split", "VID", "test", build_corpus(SENTENCES))
    assert ds[0]["letterbox"].orig_size.tolist() == [[48, 64], [48, 64]]


def test_the_dataset_corpus_lives_at_the_default_corpus_path(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")]])
    corpus = load_corpus(default_corpus_path(tmp_path / "split", "VID"))
    assert corpus.dictionary.idx2word == build_corpus(SENTENCES).dictionary.idx2word


def test_missing_index_file_names_the_path_and_existing_splits(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")]], split="train")
    with pytest.raises(UserInputError, match=r"VID_video_level_test\.pth.*VID_video_level_train\.pth"):
        vid(tmp_path, split="test")


def test_unknown_video_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserInputError, match="VID, LiOTB"):
        VIDDataset(tmp_path, tmp_path, "ImageNet", "test", build_corpus(SENTENCES))


def test_missing_first_image_fails_when_the_dataset_is_built(tmp_path):
    index = write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")] * 2])
    (tmp_path / "data" / "Data/VID/vid00/000000.JPEG").unlink()
    with pytest.raises(UserInputError, match=rf"000000\.JPEG.*{index.name}"):
        vid(tmp_path)


def test_missing_later_image_names_the_file_and_index(tmp_path):
    index = write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")] * 2])
    (tmp_path / "data" / "Data/VID/vid00/000001.JPEG").unlink()
    ds = vid(tmp_path)
    with pytest.raises(UserInputError, match=rf"000001\.JPEG.*{index.name}.*missing"):
        ds[1]


def test_corrupt_jpeg_names_the_file(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car")] * 2])
    (tmp_path / "data" / "Data/VID/vid00/000001.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = vid(tmp_path)
    with pytest.raises(UserInputError, match=r"000001\.JPEG.*cannot be decoded"):
        ds[1]


def test_empty_phrase_names_the_index_and_frame(tmp_path):
    write_vid(tmp_path, [[(grey(10), [1, 2, 30, 40], "a red car"), (grey(10), [1, 2, 30, 40], " ")]])
    with pytest.raises(UserInputError, match=r"VID_video_level_test\.pth, video 0 frame 1"):
        vid(tmp_path)[1]


def test_grey_four_channel_and_16_bit_images_become_rgb_uint8(tmp_path):
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((5, 6), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "bgra.png"), np.tile(np.array([30, 20, 10, 0], np.uint8), (5, 6, 1)))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((5, 6, 3), 40000, np.uint16))
    for name, rgb in [("grey.png", [100, 100, 100]), ("bgra.png", [10, 20, 30]), ("deep.png", [156, 156, 156])]:
        img = read_rgb(tmp_path / name, index_path="idx.pth")
        assert img.shape == (5, 6, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img[0, 0], rgb)


COCO = "other/images/mscoco/images/train2014"


@pytest.mark.parametrize("dataset, item, image_dir", [
    ("unc", ("a.jpg", "a.png", [10.6, 20.2, 30.9, 15.5], "a red car", []), COCO),
    ("gref", ("a.jpg", [10.6, 20.2, 30.9, 15.5], "a red car"), COCO),
    ("referit", ("a.jpg", "a.mat", [10.6, 20.2, 40.9, 35.5], "a red car", []), "referit/images"),
    ("flickr", ("a.jpg", [10.6, 20.2, 40.9, 35.5], "a red car"), "Flickr30k/flickr30k_images"),
])
def test_refer_boxes_become_int_corners_then_letterboxed(tmp_path, dataset, item, image_dir):
    write_refer(tmp_path, dataset, [item], {"a.jpg": grey(80, w=128, h=64)}, image_dir)
    out = refer(tmp_path, dataset)[0]
    # int box [10, 20, 40, 35]; 128x64 image: ratio 2, dw 0, dh 64
    assert torch.equal(out["boxes"], torch.tensor([[20.0, 104.0, 80.0, 134.0]]))
    assert out["images"].shape == (1, 3, 256, 256) and out["letterbox"].orig_size.tolist() == [[64, 128]]
    letterbox = out["letterbox"]
    assert letterbox.ratio.tolist() == [2.0] and letterbox.dh.tolist() == [64.0] and letterbox.dw.tolist() == [0.0]
    assert out["image_path"] == "a.jpg" and out["phrase"] == "a red car"


def test_synthvid_image_export_reads_grace_hopper_like_the_reference(tmp_path):
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), tmp_path / "g.jpg")
    (tmp_path / "split" / "synthvid").mkdir(parents=True)
    torch.save([("g.jpg", "", [1, 2, 3, 4], "a red car", [])], tmp_path / "split/synthvid/synthvid_test.pth")
    ds = ReferDataset(tmp_path, tmp_path / "split", "synthvid", "test", build_corpus(SENTENCES))
    expected = torch.load(FIXTURES / "model_parity_inputs.pt", weights_only=True)["frames"][0]
    assert (ds[0]["images"][0] - expected).abs().max().item() <= 1e-6


def test_refer_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserInputError, match="testA, testB"):
        refer(tmp_path, "unc", split="test")


def test_refer_unknown_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserInputError, match="unc, unc\\+, gref, referit, flickr, synthvid"):
        refer(tmp_path, "refcoco")


def test_refer_item_of_wrong_length_is_rejected(tmp_path):
    write_refer(tmp_path, "unc", [("a.jpg", [1, 2, 3, 4])], {"a.jpg": grey(80)}, COCO)
    with pytest.raises(UserInputError, match="item 0"):
        refer(tmp_path, "unc")


def test_refer_index_is_not_mutated_and_flip_swaps_the_phrase(tmp_path):
    items = [("a.jpg", "", [2, 5, 18, 35], "The dog on the LEFT", [])]
    write_refer(tmp_path, "unc", items, {"a.jpg": half_lit()}, COCO)
    ds = refer(tmp_path, "unc", augment=True, rng=random.Random(0))
    phrases = {ds[0]["phrase"] for _ in range(12)}
    assert phrases == {"the dog on the left", "the dog on the right"}
    assert ds.samples == items
