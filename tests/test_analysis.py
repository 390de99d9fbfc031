"""analyze.py, its bootstrap and the seed study's aggregation, on tiny hand-made indexes and predictions whose
numbers can be checked by hand (no model, no training)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import analyze
from app.analysis import Frame, load_index_info, read_run, study_comparison
from bench.attention import attention_stats, window_attention
from bench.seed_study import CONTROL_DIFFERENCES, CONTROL_METHODS, aggregate, load_seed, markdown
from model import SMALL_CFG, build_grounding_model
from model.cogrounding import ATTENTION_SCALE
from utils.bootstrap import cluster_bootstrap, two_level_bootstrap
from utils.cli import run_main
from utils.io import UserInputError

# two clips of three 100x100 frames, one expression each: a small object (1% of the frame) and a large one (9%)
GT = {"v0": [10, 10, 20, 20], "v1": [10, 10, 40, 40]}
PHRASES = {"v0": "the red circle", "v1": "the square left of the cross"}
TYPES = {"v0": ["attribute"], "v1": ["location", "motion"]}
DEGRADED = {"frames/v0/2.jpg": ["motion_blur"], "frames/v1/1.jpg": ["motion_blur"],
            "frames/v1/2.jpg": ["defocus", "occlusion"]}
# run A: IoUs per frame, and predicted boxes that stay put except at v1's last frame
IOU_A = {"v0": [0.9, 0.6, 0.2], "v1": [0.8, 0.4, 0.35]}


def _image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((100, 100, 3), np.uint8))
    return str(path)


@pytest.fixture(scope="module")
def video_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video-level index (VID format) with expression types and degradation labels, and its frames."""
    root = tmp_path_factory.mktemp("analysis_set")
    videos = []
    for v in GT:
        for t in range(3):
            _image(root / f"frames/{v}/{t}.jpg")
        videos.append([(f"frames/{v}/{t}.jpg", GT[v], PHRASES[v]) for t in range(3)])
    (root / "VID").mkdir()
    torch.save(videos, root / "VID" / "VID_video_level_test.pth")
    (root / "VID" / "expressions_test.json").write_text(json.dumps([{"types": TYPES[v]} for v in GT]))
    labels = {f"frames/{v}/{t}.jpg": DEGRADED.get(f"frames/{v}/{t}.jpg", []) for v in GT for t in range(3)}
    (root / "VID" / "degradations_test.json").write_text(json.dumps(labels))
    return root


def _write_run(path: Path, ious: dict[str, list[float]], jump: bool) -> Path:
    lines = []
    for v, values in ious.items():
        for t, iou in enumerate(values):
            pred = [60, 60, 90, 90] if jump and v == "v1" and t == 2 else [0, 0, 30, 30]
            lines.append(json.dumps({"image": f"frames/{v}/{t}.jpg", "phrase": PHRASES[v], "pred": pred,
                                     "gt": GT[v], "iou": iou}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(video_set: Path) -> tuple[Path, Path]:
    return (_write_run(video_set / "a.jsonl", IOU_A, jump=True),
            _write_run(video_set / "b.jsonl", {v: [0.9] * 3 for v in GT}, jump=False))


@pytest.fixture(scope="module")
def report(video_set: Path, runs: tuple[Path, Path]) -> str:
    out = video_set / "report.md"
    assert run_main(analyze.main, analyze.get_args_parser(),
                    [*map(str, runs), "--data_root", str(video_set), "--split_root", str(video_set),
                     "--out", str(out), "--gallery", "2"]) == 0
    return out.read_text()


def _row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_gives_accuracy_at_three_thresholds_mean_iou_and_stability(report: str) -> None:
    # run a: IoUs 0.9 0.6 0.2 / 0.8 0.4 0.35; 3 of 4 consecutive pairs keep the box
    assert _row(report, "a") == ["a", "6", "0.833", "0.500", "0.333", "0.542", "0.750"]
    assert _row(report, "b") == ["b", "6", "1.000", "1.000", "1.000", "0.900", "1.000"]


def test_report_breaks_accuracy_down_by_type_size_and_degradation(report: str) -> None:
    assert _row(report, "attribute") == ["attribute", "3", "0.667", "1.000"]
    assert _row(report, "motion") == ["motion", "3", "0.333", "1.000"]
    assert _row(report, "small") == ["small", "3", "0.667", "1.000"]
    assert _row(report, "large") == ["large", "3", "0.333", "1.000"]
    assert _row(report, "clean") == ["clean", "3", "1.000", "1.000"]
    assert _row(report, "hard (any)") == ["hard (any)", "3", "0.000", "1.000"]
    assert _row(report, "motion_blur") == ["motion_blur", "2", "0.000", "1.000"]


def test_report_compares_runs_paired_with_a_video_bootstrap_interval(report: str) -> None:
    # b - a = +0.5; resampling the two clips gives 1/3 (v0 twice), 1/2 or 2/3 (v1 twice)
    assert _row(report, "b - a") == ["b - a", "6", "2", "0.500", "1.000", "0.500", "[0.333, 0.667]"]


def test_report_links_its_timelines_and_gallery(report: str, video_set: Path) -> None:
    files = video_set / "report_files"
    assert "report_files/timelines.png" in report
    assert sorted(p.name for p in files.glob("worst_*.jpg")) == [f"worst_{r}_{k:02d}.jpg" for r in (0, 1)
                                                                  for k in (0, 1)]
    assert cv2.imread(str(files / "worst_0_00.jpg")).shape == (100, 100, 3)


def test_report_is_not_overwritten_without_overwrite(report: str, video_set: Path, runs: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture) -> None:
    code = run_main(analyze.main, analyze.get_args_parser(), [str(runs[0]), "--split_root", str(video_set),
                                                              "--out", str(video_set / "report.md")])
    assert code == 2
    assert "--out" in capsys.readouterr().err
    assert (video_set / "report.md").read_text() == report


def test_html_report_without_matplotlib_says_so_and_has_no_plots(video_set: Path, runs: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name))
    out = video_set / "plain.html"
    assert run_main(analyze.main, analyze.get_args_parser(),
                    [str(runs[0]), "--data_root", str(video_set), "--split_root", str(video_set), "--out", str(out),
                     "--gallery", "0"]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    text = out.read_text()
    assert "<td>0.833</td>" in text and "timelines.png" not in text


def test_refcoco_format_predictions_are_analysed_per_image(tmp_path: Path) -> None:
    images = tmp_path / "other/images/mscoco/images/train2014"
    _image(images / "1.jpg")
    _image(images / "2.jpg")
    (tmp_path / "unc").mkdir()
    items = [("1.jpg", "", [10, 10, 10, 10], "left man", []), ("1.jpg", "", [50, 50, 30, 30], "right man", []),
             ("2.jpg", "", [0, 0, 50, 50], "dog", [])]
    torch.save(items, tmp_path / "unc" / "unc_testB.pth")
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps({"image": image, "phrase": phrase, "pred": [0, 0, 1, 1], "gt": box,
                                               "iou": iou}) + "\n"
                                   for (image, _, box, phrase, _), iou in zip(items, (0.8, 0.1, 0.6))))
    out = tmp_path / "r.md"
    assert run_main(analyze.main, analyze.get_args_parser(),
                    [str(predictions), "--dataset", "unc", "--split", "testB", "--data_root", str(tmp_path),
                     "--split_root", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert _row(text, "p") == ["p", "3", "0.667", "0.667", "0.333", "0.500", "n/a"]
    assert _row(text, "small") == ["small", "1", "1.000"]  # 10x10 in 100x100: 1%
    assert "By expression type" not in text and "IoU timelines" not in text


def test_a_prediction_of_another_index_is_an_error_naming_the_file(video_set: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"image": "frames/v9/0.jpg", "phrase": "x", "pred": [0, 0, 1, 1],
                                 "gt": [0, 0, 1, 1], "iou": 1.0}) + "\n")
    code = run_main(analyze.main, analyze.get_args_parser(),
                    [str(stray), "--split_root", str(video_set), "--out", str(tmp_path / "r.md")])
    assert code == 2
    assert f"predictions file {stray} line 1" in capsys.readouterr().err


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    values, clusters = np.arange(20) % 3 == 0, np.arange(20) // 4
    assert cluster_bootstrap(values, clusters, seed=5) == cluster_bootstrap(values, clusters, seed=5)


def test_bootstrap_interval_contains_a_known_difference() -> None:
    rng = np.random.default_rng(0)
    diff = (rng.random(600) < 0.6).astype(float) - (rng.random(600) < 0.4).astype(float)  # true difference 0.2
    mean, low, high = cluster_bootstrap(diff, np.arange(600) // 6)
    assert low < 0.2 < high and low > 0
    assert mean == pytest.approx(diff.mean())


def test_bootstrap_interval_of_no_difference_contains_zero() -> None:
    rng = np.random.default_rng(1)
    same = rng.random(600) < 0.5
    _, low, high = cluster_bootstrap(same.astype(float) - rng.permutation(same).astype(float), np.arange(600) // 6)
    assert low < 0 < high


def test_two_level_bootstrap_is_wider_when_the_seeds_disagree() -> None:
    clusters = np.arange(300) // 5
    agree = np.tile(np.r_[np.ones(150), np.zeros(150)], (3, 1))
    disagree = agree.copy()
    disagree[0, 150:200] = 1  # one seed scores 50 frames more
    _, low_a, high_a = two_level_bootstrap(agree, clusters)
    _, low_d, high_d = two_level_bootstrap(disagree, clusters)
    assert high_d - low_d > high_a - low_a


def _frames(hits: list[int]) -> list[Frame]:
    """Four frames in two clips: the first clip clean, the second motion-blurred."""
    return [Frame(f"f/{k // 2}/{k}.jpg", "p", [0, 0, 1, 1], [0, 0, 1, 1], 0.9 if hit else 0.1, k // 2, str(k // 2),
                  k % 2, ("attribute",), None, ("motion_blur",) if k >= 2 else ()) for k, hit in enumerate(hits)]


def test_seed_study_aggregates_mean_std_and_paired_differences() -> None:
    sl = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]  # accuracy 0.25, 0.5, 0: mean 0.25, std 0.25
    per_seed = [{"SL": _frames(s), "CG": _frames([1, 1, 1, 1]), "PP": _frames([1, 1, 1, 0])} for s in sl]
    result = aggregate(per_seed, [13, 14, 15])
    overall = result["groups"]["all"]
    assert overall["methods"]["SL-Att (per frame)"]["mean"] == pytest.approx(0.25)
    assert overall["methods"]["SL-Att (per frame)"]["std"] == pytest.approx(0.25)
    assert overall["methods"]["CG-SL-Att"]["std"] == 0
    cg_sl = overall["differences"]["CG - SL"]
    assert cg_sl["mean"] == pytest.approx(0.75) and cg_sl["per_seed"] == pytest.approx([0.75, 0.5, 1.0])
    assert cg_sl["frames_interval"][0] <= 0.75 <= cg_sl["frames_interval"][1]
    assert cg_sl["seeds_frames_interval"][0] <= 0.75 <= cg_sl["seeds_frames_interval"][1]
    hard = result["groups"]["hard (any) frames"]
    assert hard["frames"] == 2 and hard["methods"]["CG-SL-Att + post-processing"]["mean"] == 0.5
    assert result["groups"]["clean frames"]["differences"]["PP - CG"]["mean"] == 0


def test_seed_study_control_compares_co_grounding_with_sl_att_trained_as_long() -> None:
    per_seed = [{"SL": _frames([0, 0, 0, 0]), "CG": _frames([1, 1, 1, 1]), "PP": _frames([1, 1, 1, 1]),
                 "SL+": _frames([1, 1, 0, 0])} for _ in range(3)]
    result = aggregate(per_seed, [13, 14, 15], methods=CONTROL_METHODS, differences=CONTROL_DIFFERENCES)
    assert result["groups"]["all"]["differences"]["CG - SL+"]["mean"] == pytest.approx(0.5)
    assert result["groups"]["hard (any) frames"]["differences"]["CG - SL+"]["mean"] == pytest.approx(1.0)
    assert result["groups"]["clean frames"]["differences"]["SL+ - SL"]["mean"] == pytest.approx(1.0)
    assert "SL+ = SL-Att, trained longer" in markdown(result)


def test_seed_study_control_needs_each_seeds_control_predictions(video_set: Path, runs: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    names = {"SL-Att (per frame)": "a.jsonl", "CG-SL-Att": "b.jsonl", "CG-SL-Att + post-processing": "b.jsonl"}
    (tmp_path / "results.json").write_text(json.dumps({"predictions": names}))
    info = load_index_info(video_set, video_set, "VID", "test")
    with pytest.raises(UserInputError, match="no predictions of SL-Att, trained longer"):
        load_seed(tmp_path, info, CONTROL_METHODS)


def test_seed_study_reads_per_seed_prediction_files(video_set: Path, runs: tuple[Path, Path], tmp_path: Path
                                                    ) -> None:
    names = {"SL-Att (per frame)": "a.jsonl", "CG-SL-Att": "b.jsonl", "CG-SL-Att + post-processing": "b.jsonl"}
    for seed in (13, 14):
        folder = tmp_path / f"seed_{seed}"
        folder.mkdir()
        for path in runs:
            (folder / path.name).write_text(path.read_text())
        (folder / "results.json").write_text(json.dumps({"predictions": names, "total_s": 60.0}))
    info = load_index_info(video_set, video_set, "VID", "test", video_set / "VID" / "degradations_test.json")
    result = aggregate([load_seed(tmp_path / f"seed_{s}", info)[0] for s in (13, 14)], [13, 14])
    assert result["frames"] == 6 and result["videos"] == 2
    assert result["groups"]["all"]["differences"]["CG - SL"]["mean"] == pytest.approx(0.5)
    assert result["groups"]["hard (any) frames"]["differences"]["CG - SL"]["mean"] == pytest.approx(1.0)
    assert "| all | 6 (2) | 0.500 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in markdown(result)


def test_read_run_keeps_the_index_order_of_repeated_frames(video_set: Path, runs: tuple[Path, Path]) -> None:
    info = load_index_info(video_set, video_set, "VID", "test")
    frames = read_run(runs[0], info)
    assert [(f.entry, f.position) for f in frames] == [(v, t) for v in (0, 1) for t in range(3)]


def test_attention_of_a_uniform_softmax_has_entropy_one_and_peak_one_over_keys() -> None:
    entropy, peak = attention_stats(torch.full((2, 4, 16, 64), 1 / 64))
    assert entropy.tolist() == pytest.approx([1.0, 1.0]) and peak.tolist() == pytest.approx([1 / 64, 1 / 64])


def test_attention_on_one_key_has_entropy_zero_and_peak_one() -> None:
    weights = torch.zeros(1, 4, 16, 64)
    weights[..., 5] = 1
    entropy, peak = attention_stats(weights)
    assert entropy.tolist() == pytest.approx([0.0], abs=1e-6) and peak.tolist() == [1.0]


def test_the_demo_compares_its_run_with_the_study_of_its_backbone_only() -> None:
    study = {"backbone": "pretrained", "seeds": [13, 14, 15],
             "methods": {"CG-SL-Att": {"accuracy": {"mean": 0.7, "std": 0.02}}}}
    assert "CG-SL-Att 0.690 vs 0.700 ± 0.020" in study_comparison({"CG-SL-Att": 0.69}, study, "pretrained")
    assert "no comparison" in study_comparison({"CG-SL-Att": 0.69}, study, "random")


def test_measured_attention_is_the_weighting_the_video_model_applies() -> None:
    torch.manual_seed(0)
    model = build_grounding_model("video", 10, SMALL_CFG, image_size=64, emb_size=16).eval()
    images = torch.rand(2, 5, 3, 64, 64)
    with torch.no_grad():
        measured = window_attention(model, images)
        for weights, feats in zip(measured, model.frame_features(images.flatten(0, 1))):
            cells = feats.flatten(1, 2).unflatten(0, (2, 5))  # (W, T, hw, 2E)
            e = cells.shape[-1] // 2
            partners = torch.cat([cells[:, :2], cells[:, 3:]], dim=1)
            expected = F.scaled_dot_product_attention(cells[:, 2, None, :, :e].expand(-1, 4, -1, -1),
                                                      partners[..., :e], partners[..., e:], scale=ATTENTION_SCALE)
            assert torch.allclose(weights @ partners[..., e:], expected, atol=1e-5)
