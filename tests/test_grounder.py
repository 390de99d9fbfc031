"""ground.py and the Grounder: the same boxes as the test scripts on synthvid, videos, bad input.

The fidelity tests run the evaluation scripts in-process on the tiny synthetic set with a random small model
(the boxes of any weights must agree) and ground the same frames with ``ground.py``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ground
import post_processing
import test_semantic_attention_cogrounding as test_video
import train_semantic_attention_visual_grounding as image_script
from app.builders import inference_config
from app.grounder import Grounder, natural_key, read_frames
from app.predictions import read_predictions
from model import SMALL_CFG, build_grounding_model
from utils.checkpoint import INFERENCE_KEY, read_checkpoint, save_training_checkpoint
from utils.cli import run_main
from utils.io import safe_load
from utils.word_utils import load_corpus

SIZE, EMB = 64, 32
BOX_ATOL = 1e-3  # px: batches of other sizes round the last float bits differently
pytestmark = pytest.mark.usefixtures("one_thread")


def write_checkpoint(path: Path, kind: str, root: Path, dataset: str) -> Path:
    """A random small model of ``kind`` saved as training does (reference keys plus ``inference``)."""
    corpus = load_corpus(root / dataset / "corpus.pth")
    torch.manual_seed(1)
    model = build_grounding_model(kind, len(corpus), SMALL_CFG, image_size=SIZE, emb_size=EMB)
    args = argparse.Namespace(cfg=str(SMALL_CFG), size=SIZE, emb_size=EMB, light=False, dataset=dataset,
                              anchor_imsize=416, time=20)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_training_checkpoint(path, model, optimizer, 1, 0.0, inference=inference_config(args, corpus, kind))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ground")


@pytest.fixture(scope="module")
def video_ckpt(tiny_root: Path, work: Path) -> Path:
    return write_checkpoint(work / "video.pth.tar", "video", tiny_root, "VID")


@pytest.fixture(scope="module")
def image_ckpt(tiny_root: Path, work: Path) -> Path:
    return write_checkpoint(work / "image.pth.tar", "image", tiny_root, "synthvid")


def script_flags(root: Path, dataset: str, logs: Path) -> list[str]:
    return ["--data_root", str(root), "--split_root", str(root), "--dataset", dataset, "--size", str(SIZE), "--lstm",
            "--cfg", str(SMALL_CFG), "--emb_size", str(EMB), "--batch_size", "2", "--workers", "0", "--no_progress",
            "--log_dir", str(logs)]


def run_script(module, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:  # noqa: ANN001
    code = run_main(module.main, module.get_args_parser(), argv)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def test_script_outputs(tiny_root: Path, video_ckpt: Path, work: Path) -> Path:
    """The test script's --save_pred and --cache, and post_processing.py's --save_pred, for every test video."""
    out = work / "scripts"
    flags = script_flags(tiny_root, "VID", work / "logs")
    assert run_main(test_video.main, test_video.get_args_parser(), [
        *flags, "--test", "--resume", str(video_ckpt), "--cache", "--cache_dir", str(out / "cache"),
        "--save_pred", str(out / "pred.jsonl")]) == 0
    assert run_main(post_processing.main, post_processing.get_args_parser(), [
        *flags[:6], "--size", str(SIZE), "--no_progress", "--log_dir", str(work / "logs"), "--cache_dir",
        str(out / "cache"),
        "--save_pred", str(out / "pp.jsonl")]) == 0
    return out


def index_videos(root: Path) -> list[list[tuple]]:
    return safe_load(root / "VID" / "VID_video_level_test.pth", what="index file")


def frames_folder(root: Path, video: list[tuple], folder: Path) -> Path:
    """A folder holding one test video's frames under names that sort naturally, not lexically."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, (path, _, _) in enumerate(video):
        shutil.copy(root / path, folder / f"frame{t}.jpg")
    return folder


def ground_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return run_script(ground, [*argv, "--no_progress"], capsys)


@pytest.mark.parametrize("post", [False, True], ids=["windows", "post_process"])
def test_folder_of_a_test_video_gets_the_boxes_of_the_test_scripts(post, tiny_root, video_ckpt, test_script_outputs,
                                                                   tmp_path, capsys) -> None:  # noqa: ANN001
    expected = read_predictions(test_script_outputs / ("pp.jsonl" if post else "pred.jsonl"))
    start = 0
    for v, video in enumerate(index_videos(tiny_root)):
        folder = frames_folder(tiny_root, video, tmp_path / f"v{v}")
        out = tmp_path / f"v{v}.jsonl"
        code, err = ground_cli([str(folder), "--resume", str(video_ckpt), "--phrase", video[0][2],
                                "--out_jsonl", str(out), *(["--post_process"] if post else [])], capsys)
        assert code == 0, err
        got = read_predictions(out)
        assert [r["frame"] for r in got] == list(range(len(video)))
        for record, reference in zip(got, expected[start:start + len(video)]):
            assert record["box"] == pytest.approx(reference["pred"], abs=BOX_ATOL)
        start += len(video)


def test_image_checkpoint_gets_the_boxes_of_the_image_script(tiny_root, image_ckpt, work, capsys) -> None:  # noqa: ANN001
    pred = work / "image_pred.jsonl"
    flags = script_flags(tiny_root, "synthvid", work / "logs")
    code, err = run_script(image_script, [*flags, "--test", "--resume", str(image_ckpt), "--test_split", "test",
                                          "--save_pred", str(pred)], capsys)
    assert code == 0, err
    expected = read_predictions(pred)
    grounder = Grounder.from_checkpoint(image_ckpt, batch_size=3)
    for phrase in sorted({r["phrase"] for r in expected}):
        chosen = [r for r in expected if r["phrase"] == phrase]
        source = read_frames([tiny_root / r["image"] for r in chosen])
        got = list(grounder.ground(source, [phrase]))
        assert len(got) == len(chosen)
        for prediction, reference in zip(got, chosen):
            assert prediction.box == pytest.approx(reference["pred"], abs=BOX_ATOL)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    fourcc = {".mp4": "mp4v", ".avi": "MJPG"}[path.suffix]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def video_frames(root: Path, count: int) -> list[np.ndarray]:
    video = max(index_videos(root), key=len)
    return [cv2.imread(str(root / path)) for path, _, _ in video[:count]]


def decoded(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_mp4_is_grounded_frame_by_frame_with_times_and_an_annotated_copy(tiny_root, video_ckpt, tmp_path,
                                                                         capsys) -> None:  # noqa: ANN001
    clip = write_video(tmp_path / "clip.mp4", video_frames(tiny_root, 5), fps=10.0)
    out = tmp_path / "out"
    code, err = ground_cli([str(clip), "--resume", str(video_ckpt), "--phrase", "the red circle", "--phrase",
                            "the big blue square", "--out_jsonl", str(out / "g.jsonl"), "--out_video",
                            str(out / "g.mp4"), "--out_gif", str(out / "g.gif")], capsys)
    assert code == 0, err
    records = read_predictions(out / "g.jsonl")
    assert [(r["frame"], r["sentence"]) for r in records] == [
        (t, s) for t in range(5) for s in ("the red circle", "the big blue square")]
    assert [r["time"] for r in records[::2]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert all(len(r["candidates"]) == 5 and r["candidates"][0]["box"] == r["box"] for r in records)
    annotated = cv2.VideoCapture(str(out / "g.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == 10.0
    frames = decoded(out / "g.mp4")
    assert len(frames) == 5 and frames[0].shape == decoded(clip)[0].shape
    assert (out / "g.gif").stat().st_size > 0


def test_mp4_gives_the_boxes_of_its_decoded_frames_as_a_folder(tiny_root, video_ckpt, tmp_path) -> None:  # noqa: ANN001
    clip = write_video(tmp_path / "clip.avi", video_frames(tiny_root, 5))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(decoded(clip)):
        cv2.imwrite(str(folder / f"{t}.png"), frame)
    grounder = Grounder.from_checkpoint(video_ckpt)
    from_video = list(grounder.ground(read_frames([clip]), ["the red circle"]))
    from_folder = list(grounder.ground(read_frames([folder]), ["the red circle"]))
    assert [p.box for p in from_video] == [p.box for p in from_folder]


def test_n_sentences_cost_one_backbone_pass_per_frame(tiny_root, video_ckpt, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    grounder = Grounder.from_checkpoint(video_ckpt, batch_size=2)
    seen = []
    features = grounder.model.frame_features
    monkeypatch.setattr(grounder.model, "frame_features", lambda images: seen.append(len(images)) or features(images))
    one = list(grounder.ground(read_frames([folder]), ["the red circle"]))
    assert sum(seen) == len(one)
    seen.clear()
    four = list(grounder.ground(read_frames([folder]), ["the red circle", "the blue square", "the green star",
                                                        "the red circle"]))
    assert sum(seen) == len(one) and len(four) == 4 * len(one)
    torch.testing.assert_close(torch.tensor([p.box for p in four[::4]]), torch.tensor([p.box for p in one]),
                               atol=BOX_ATOL, rtol=0)
    assert [p.box for p in four[3::4]] == [p.box for p in four[::4]]


def test_stride_grounds_every_kth_frame(tiny_root, video_ckpt, tmp_path) -> None:  # noqa: ANN001
    video = max(index_videos(tiny_root), key=len)
    folder = frames_folder(tiny_root, video, tmp_path / "v")
    predictions = list(Grounder.from_checkpoint(video_ckpt).ground(read_frames([folder]), ["the red circle"],
                                                                   stride=2))
    assert [p.frame for p in predictions] == list(range(0, len(video), 2))


def test_folders_sort_frames_naturally() -> None:
    assert sorted(["f10.jpg", "f9.jpg", "f100.jpg", "F1.jpg"], key=natural_key) == ["F1.jpg", "f9.jpg", "f10.jpg",
                                                                                     "f100.jpg"]


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_videos_of_one_to_four_frames_get_clipped_windows(count, tiny_root, video_ckpt, tmp_path) -> None:  # noqa: ANN001
    """As the test script: every window clipped at both ends of the short video, one record per frame."""
    frames = video_frames(tiny_root, count)
    clip = write_video(tmp_path / "short.avi", frames)
    predictions = list(Grounder.from_checkpoint(video_ckpt).ground(read_frames([clip]), ["the red circle"],
                                                                    post_process=True))
    assert [p.frame for p in predictions] == list(range(count))


def test_checkpoint_keeps_the_reference_keys_and_adds_what_inference_needs(video_ckpt) -> None:  # noqa: ANN001
    checkpoint = read_checkpoint(video_ckpt)
    assert {"epoch", "state_dict", "best_loss", "optimizer"} <= set(checkpoint)
    assert {"kind", "cfg", "size", "emb_size", "anchors", "anchor_imsize", "words"} <= set(checkpoint[INFERENCE_KEY])


def released_style(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` without our ``inference`` entry, as the authors' files are."""
    saved = torch.load(checkpoint, weights_only=True)
    del saved[INFERENCE_KEY]
    torch.save(saved, out)
    return out


def test_released_checkpoint_works_with_the_corpus_and_settings_given(tiny_root, video_ckpt, tmp_path,
                                                                      capsys) -> None:  # noqa: ANN001
    released = released_style(video_ckpt, tmp_path / "released.pth.tar")
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    flags = [str(folder), "--phrase", "the red circle", "--cfg", str(SMALL_CFG), "--size", str(SIZE), "--emb_size",
             str(EMB)]
    code, err = ground_cli([*flags, "--resume", str(released), "--corpus", str(tiny_root / "VID" / "corpus.pth"),
                            "--out_jsonl", str(tmp_path / "a.jsonl")], capsys)
    assert code == 0, err
    assert ground_cli([*flags, "--resume", str(video_ckpt), "--out_jsonl", str(tmp_path / "b.jsonl")], capsys)[0] == 0
    assert read_predictions(tmp_path / "a.jsonl") == read_predictions(tmp_path / "b.jsonl")


# ---------------------------------------------------------------------------------------------- bad input

def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_file_that_cannot_be_decoded_is_named(video_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    code, err = ground_cli([str(bad), "--resume", str(video_ckpt), "--phrase", "the red circle", "--out_jsonl",
                            str(tmp_path / "o.jsonl")], capsys)
    assert_clean_error(code, err, str(bad), "cannot be decoded")
    assert not (tmp_path / "o.jsonl").exists()


def test_a_video_with_no_frames_is_an_error(video_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    code, err = ground_cli([str(empty), "--resume", str(video_ckpt), "--phrase", "the red circle", "--out_jsonl",
                            str(tmp_path / "o.jsonl")], capsys)
    assert_clean_error(code, err, str(empty))
    assert not (tmp_path / "o.jsonl").exists()


def test_a_sentence_with_no_known_word_is_named(tiny_root, video_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    code, err = ground_cli([str(folder), "--resume", str(video_ckpt), "--phrase", "the red circle", "--phrase",
                            "zebra xylophone", "--out_jsonl", str(tmp_path / "o.jsonl")], capsys)
    assert_clean_error(code, err, "'zebra xylophone'", "vocabulary")


def test_unknown_words_of_a_sentence_are_a_warning(tiny_root, video_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    code, err = ground_cli([str(folder), "--resume", str(video_ckpt), "--phrase", "the red zebra circle",
                            "--out_jsonl", str(tmp_path / "o.jsonl")], capsys)
    assert code == 0 and "warning" in err and "zebra" in err


def test_an_existing_output_needs_overwrite(tiny_root, video_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    (tmp_path / "o.mp4").write_bytes(b"mine")
    flags = [str(folder), "--resume", str(video_ckpt), "--phrase", "the red circle", "--out_video",
             str(tmp_path / "o.mp4")]
    assert_clean_error(*ground_cli(flags, capsys), "--out_video", "--overwrite")
    assert (tmp_path / "o.mp4").read_bytes() == b"mine"
    assert ground_cli([*flags, "--overwrite"], capsys)[0] == 0
    assert len(decoded(tmp_path / "o.mp4")) == len(index_videos(tiny_root)[0])


def test_a_checkpoint_of_the_other_kind_is_refused(tiny_root, image_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    code, err = ground_cli([str(folder), "--resume", str(image_ckpt), "--kind", "video", "--phrase",
                            "the red circle", "--out_jsonl", str(tmp_path / "o.jsonl")], capsys)
    assert_clean_error(code, err, str(image_ckpt), "image model")


def test_post_processing_needs_the_video_model(tiny_root, image_ckpt, tmp_path, capsys) -> None:  # noqa: ANN001
    folder = frames_folder(tiny_root, index_videos(tiny_root)[0], tmp_path / "v")
    code, err = ground_cli([str(folder), "--resume", str(image_ckpt), "--phrase", "the red circle",
                            "--post_process", "--out_jsonl", str(tmp_path / "o.jsonl")], capsys)
    assert_clean_error(code, err, "--post_process")
