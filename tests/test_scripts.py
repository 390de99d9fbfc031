"""Entry scripts end to end on the tiny synthetic set (small cfg, 64 px, CPU).

The train -> resume -> test (+ cache) -> post-process chain, the image script and the 2-process DDP run go
through the real command lines in subprocesses; the exact-resume, AMP and bad-input checks call the scripts'
``main`` in-process (the same code path minus interpreter start-up, which costs seconds here).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import pytest
import torch
import torch.distributed as dist

import app.engine
import app.pipeline
import post_processing
import test_semantic_attention_cogrounding as test_video
import train_semantic_attention_cogrounding as train_video
from app.cache import MANIFEST
from app.predictions import read_predictions
from model import SMALL_CFG, build_grounding_model
from utils.checkpoint import load_model_state, read_checkpoint
from utils.cli import run_main
from utils.io import safe_load
from utils.word_utils import load_corpus

REPO = Path(__file__).resolve().parents[1]
TRAIN_VIDEO = REPO / "train_semantic_attention_cogrounding.py"
TEST_VIDEO = REPO / "test_semantic_attention_cogrounding.py"
POST_PROCESS = REPO / "post_processing.py"
TRAIN_IMAGE = REPO / "train_semantic_attention_visual_grounding.py"
EMB = 32
REFERENCE_KEYS = {"epoch", "state_dict", "best_loss", "optimizer"}
PRED_KEYS = ["image", "phrase", "pred", "gt", "iou"]
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
pytestmark = pytest.mark.usefixtures("one_thread")


def data_flags(root: Path, dataset: str = "VID") -> list[str]:
    return ["--data_root", str(root), "--split_root", str(root), "--dataset", dataset, "--size", "64"]


def model_flags(root: Path, dataset: str = "VID") -> list[str]:
    """What the training and testing scripts share: tiny model, batch 2, no workers, no progress bars."""
    return [*data_flags(root, dataset), "--lstm", "--cfg", str(SMALL_CFG), "--emb_size", str(EMB),
            "--batch_size", "2", "--workers", "0", "--no_progress"]


def run_cli(cwd: Path, *args: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` with one OpenMP thread per process (2 cores, shared)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def split_frames(root: Path) -> list[str]:
    """Image paths of the test split's frames, in dataset order."""
    videos = safe_load(root / "VID" / "VID_video_level_test.pth", what="index file")
    return [path for video in videos for path, _, _ in video]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the logs (which runs append to), with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "logs"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh current directory for an in-process run; closes the scripts' log file afterwards."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    logger = logging.getLogger("cgslatt")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


def run_in_process(script: ModuleType, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``script``'s command line in this process: (exit code, stdout, stderr)."""
    code = run_main(script.main, script.get_args_parser(), argv)
    out, err = capsys.readouterr()
    return code, out, err


# Runs the training script with app.pipeline.barrier (called once per epoch, after the checkpoint is saved)
# interrupting the run after its first epoch, on every rank.
INTERRUPT_AFTER_FIRST_EPOCH = """
import runpy, sys
sys.path.insert(0, {repo!r})
import app.pipeline
barrier = app.pipeline.barrier
def interrupt():
    barrier()
    raise KeyboardInterrupt
app.pipeline.barrier = interrupt
runpy.run_path({script!r}, run_name="__main__")
"""


def interrupted_after_first_epoch(cwd: Path, script: Path, *args: str, launcher: tuple[str, ...] = ()
                                  ) -> subprocess.CompletedProcess:
    """``script`` run (through ``launcher``, e.g. torchrun) until its first epoch's checkpoint is written."""
    wrapper = cwd / f"interrupted_{script.name}"
    wrapper.write_text(INTERRUPT_AFTER_FIRST_EPOCH.format(repo=str(REPO), script=str(script)))
    proc = run_cli(cwd, *launcher, wrapper, *args)
    assert proc.returncode != 0 and "interrupted: kept" in proc.stderr, proc.stderr[-2000:]
    return proc


# ----------------------------------------------------------------------------------- the command chain

@dataclass
class Chain:
    work: Path
    epoch1: Path  # the checkpoint after the first run (1 epoch), before resuming
    resume: subprocess.CompletedProcess
    test: subprocess.CompletedProcess
    post: subprocess.CompletedProcess

    @property
    def checkpoint(self) -> Path:
        return self.work / "saved_models" / "tiny_checkpoint.pth.tar"

    @property
    def cache(self) -> Path:
        return self.work / "cache" / "tiny"


@pytest.fixture(scope="module")
def chain(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """train 2 epochs, interrupted after the first -> resume -> test with --cache/--save_pred/--save_plot ->
    post_processing.py."""
    work = tmp_path_factory.mktemp("chain")
    flags = model_flags(tiny_root)
    interrupted_after_first_epoch(work, TRAIN_VIDEO, *flags, "--nb_epoch", "2", "--savename", "tiny")
    epoch1 = shutil.copy(work / "saved_models" / "tiny_checkpoint.pth.tar", work / "epoch1.pth.tar")
    resume = succeeded(run_cli(work, TRAIN_VIDEO, *flags, "--nb_epoch", "2", "--savename", "tiny",
                               "--resume", "saved_models/tiny_checkpoint.pth.tar"))
    test = succeeded(run_cli(work, TEST_VIDEO, *flags, "--savename", "tiny", "--test",
                             "--resume", "saved_models/tiny_checkpoint.pth.tar", "--cache",
                             "--save_pred", "pred.jsonl", "--save_plot", "plots"))
    post = succeeded(run_cli(work, POST_PROCESS, *data_flags(tiny_root), "--lstm", "--test", "--no_progress",
                             "--cache_dir", "cache/tiny", "--save_pred", "pp.jsonl"))
    return Chain(work, Path(epoch1), resume, test, post)


def test_training_writes_checkpoints_in_the_reference_format(chain: Chain, tiny_root: Path) -> None:
    for name in ("tiny_checkpoint.pth.tar", "tiny_model_best.pth.tar"):
        checkpoint = read_checkpoint(chain.work / "saved_models" / name)
        assert REFERENCE_KEYS <= set(checkpoint)
        assert all(key.startswith("module.") for key in checkpoint["state_dict"])
        assert isinstance(checkpoint["best_loss"], float) and 0 <= checkpoint["best_loss"] <= 1
        assert {"state", "param_groups"} <= set(checkpoint["optimizer"])
    vocab_size = len(load_corpus(tiny_root / "VID" / "corpus.pth"))
    model = build_grounding_model("video", vocab_size, SMALL_CFG, image_size=64, emb_size=EMB)
    load_model_state(model, read_checkpoint(chain.checkpoint)["state_dict"], "checkpoint")


def test_resume_continues_at_the_saved_epoch(chain: Chain) -> None:
    first, final = read_checkpoint(chain.epoch1), read_checkpoint(chain.checkpoint)
    assert (first["epoch"], final["epoch"]) == (1, 2)
    assert "resumed from saved_models/tiny_checkpoint.pth.tar at epoch 1" in chain.resume.stdout
    assert "epoch 2/2" in chain.resume.stdout and "epoch 1/2" not in chain.resume.stdout
    changed = [k for k, v in final["state_dict"].items() if not torch.equal(v, first["state_dict"][k])]
    assert changed, "the resumed epoch did not update the weights"


def test_test_script_reports_accuracy_miou_and_centre_accuracy(chain: Chain) -> None:
    assert re.search(r"VID test: accuracy [01]\.\d{4}  mean IoU [01]\.\d{4}  centre accuracy [01]\.\d{4}  "
                     r"\(9 samples\)", chain.test.stdout), chain.test.stdout


def test_cache_files_follow_the_reference_layout(chain: Chain, tiny_root: Path) -> None:
    expected = [f"{Path(p).parent.name}/{Path(p).stem}_{i}.pth" for i, p in enumerate(split_frames(tiny_root))]
    assert sorted(str(p.relative_to(chain.cache)) for p in chain.cache.rglob("*") if p.is_file()) == \
        sorted([*expected, MANIFEST])
    entry = torch.load(chain.cache / expected[-1], weights_only=True)
    assert set(entry) == {"pred_bbox_topk", "pred_score_topk", "visu_feat"}
    assert entry["pred_bbox_topk"].shape == (5, 1, 4) and entry["visu_feat"].shape == (5, 1, EMB)
    assert len(entry["pred_score_topk"]) == 5 and all(isinstance(s, float) for s in entry["pred_score_topk"])
    assert entry["pred_score_topk"] == sorted(entry["pred_score_topk"], reverse=True)


def test_post_processing_prints_an_accuracy(chain: Chain) -> None:
    assert re.search(r"VID test after post-processing: accuracy [01]\.\d{4}  mean IoU [01]\.\d{4}  \(9 samples\)",
                     chain.post.stdout), chain.post.stdout


@pytest.mark.parametrize("name", ["pred.jsonl", "pp.jsonl"], ids=["test", "post_processing"])
def test_save_pred_writes_one_json_line_per_frame_in_dataset_order(chain: Chain, tiny_root: Path, name: str) -> None:
    records = read_predictions(chain.work / name)
    assert [list(r) for r in records] == [PRED_KEYS] * len(records)
    assert [r["image"] for r in records] == split_frames(tiny_root)
    assert all(len(r["pred"]) == 4 and len(r["gt"]) == 4 and 0 <= r["iou"] <= 1 for r in records)


def test_post_processing_scores_against_the_same_ground_truth_as_the_test_script(chain: Chain) -> None:
    tested, post = read_predictions(chain.work / "pred.jsonl"), read_predictions(chain.work / "pp.jsonl")
    assert [(r["image"], r["phrase"], r["gt"]) for r in post] == [(r["image"], r["phrase"], r["gt"]) for r in tested]


def test_output_files_get_the_usual_permissions(chain: Chain) -> None:
    """Checkpoints, caches and predictions are created like any file (0o666 minus the umask), not 0o600.

    They are written through tempfile.mkstemp (utils.io), which creates the file 0o600; a checkpoint or cache
    meant for a group's shared folder would then be unreadable to the rest of the group.
    """
    umask = os.umask(0)
    os.umask(umask)
    outputs = [chain.checkpoint, next(chain.cache.rglob("*.pth")), chain.work / "pred.jsonl"]
    assert {str(p.relative_to(chain.work)): oct(p.stat().st_mode & 0o777) for p in outputs} == \
        {str(p.relative_to(chain.work)): oct(0o666 & ~umask) for p in outputs}


def test_save_plot_writes_an_annotated_image_per_frame(chain: Chain, tiny_root: Path) -> None:
    plots = sorted((chain.work / "plots").glob("*.jpg"))
    frames = split_frames(tiny_root)
    assert len(plots) == len(frames)
    for plot, frame in zip(plots, frames):
        assert cv2.imread(str(plot)).shape == cv2.imread(str(tiny_root / frame)).shape


# ------------------------------------------------------------------------- the README's reference commands

def readme_reference_commands() -> list[list[str]]:
    """The commands of README.md's "The reference commands" block, as argument lists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### The reference commands"):]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start:section.index("\n```", start)]
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


# appended to each reference command: the small model at 64 px on the tiny set, one epoch, batches the tiny
# image split can fill (9 training expressions), no loader processes, no progress bars
SMALL_MODEL = ["--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", str(EMB), "--workers", "0", "--no_progress"]
SMALL_TRAINING = [*SMALL_MODEL, "--nb_epoch", "1", "--batch_size", "4"]
SMALL_POST_PROCESSING = ["--size", "64", "--no_progress"]


def reference_data(tiny_root: Path, work: Path) -> None:
    """``./data`` as the README lays it out: VID-Sentence under data/VID, RefCOCO ('unc') under data/unc with its
    images under data/other/images/mscoco/images/train2014 (here: the tiny set and its image-level export)."""
    data = work / "data"
    data.mkdir()
    for name in ("VID", "frames"):
        (data / name).symlink_to(tiny_root / name)
    (data / "unc").mkdir()
    for split in ("train", "val"):
        shutil.copy(tiny_root / "synthvid" / f"synthvid_{split}.pth", data / "unc" / f"unc_{split}.pth")
    shutil.copy(tiny_root / "synthvid" / "corpus.pth", data / "unc" / "corpus.pth")
    coco = data / "other" / "images" / "mscoco" / "images" / "train2014"
    coco.parent.mkdir(parents=True)
    coco.symlink_to(tiny_root)


@pytest.fixture(scope="module")
def readme_runs(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, list[tuple[list[str], subprocess.CompletedProcess]]]:
    """Every reference command, in README order; a released checkpoint a command resumes is stood in for by the
    checkpoint the training command before it wrote for the same dataset."""
    work = tmp_path_factory.mktemp("readme")
    reference_data(tiny_root, work)
    trained: dict[str, Path] = {}
    runs = []
    for argv in readme_reference_commands():
        assert argv[0] == "python", argv
        script, flags = argv[1], argv[2:]
        option = dict(zip(flags, flags[1:]))
        if script == POST_PROCESS.name:
            extra = SMALL_POST_PROCESSING
        elif "--test" in flags:
            extra = SMALL_MODEL
            released = work / option["--resume"]
            released.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(trained[option["--dataset"]], released)
        else:
            extra = SMALL_TRAINING
            trained[option["--dataset"]] = work / "saved_models" / f"{option['--savename']}_checkpoint.pth.tar"
        runs.append((argv, run_cli(work, REPO / script, *flags, *extra)))
    return work, runs


def test_the_readme_lists_the_five_reference_commands():
    scripts = [argv[1] for argv in readme_reference_commands()]
    assert scripts == [TRAIN_VIDEO.name, TEST_VIDEO.name, POST_PROCESS.name, TRAIN_IMAGE.name, TRAIN_IMAGE.name]


@pytest.mark.parametrize("index, printed", [
    (0, r"epoch 1/1 .* val accuracy [01]\.\d{4}"),
    (1, r"VID test: accuracy [01]\.\d{4}  mean IoU [01]\.\d{4}  centre accuracy [01]\.\d{4}  \(9 samples\)"),
    (2, r"VID test after post-processing: accuracy [01]\.\d{4}  mean IoU [01]\.\d{4}  \(9 samples\)"),
    (3, r"epoch 1/1 .* val accuracy [01]\.\d{4}"),
    (4, r"unc val: accuracy [01]\.\d{4}  mean IoU [01]\.\d{4}  centre accuracy [01]\.\d{4}  \(3 samples\)"),
], ids=["train video", "test video + cache", "post-processing", "train image", "test image"])
def test_reference_command_runs_verbatim(readme_runs, index: int, printed: str) -> None:
    _, runs = readme_runs
    argv, proc = runs[index]
    succeeded(proc)
    assert re.search(printed, proc.stdout), (argv, proc.stdout)


def test_reference_post_processing_logs_under_its_savename(readme_runs) -> None:
    work, _ = readme_runs
    assert "after post-processing: accuracy" in (work / "logs" / "model_post_processing.log").read_text()


# ---------------------------------------------------------------------------------- exact resume, AMP

def final_state(save_dir: Path, savename: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(save_dir / f"{savename}_checkpoint.pth.tar")["state_dict"]


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_root: Path, workdir: Path) -> None:
    """Also from a checkpoint without the learning-rate scheduler and the flags (as the authors' are)."""
    parser = train_video.get_args_parser()
    flags = [*model_flags(tiny_root), "--nb_epoch", "2", "--lr_per_iter", "--warmup_iters", "5"]
    train_video.main(parser.parse_args([*flags, "--savename", "full"]))

    def interrupt() -> None:  # app.pipeline.barrier runs once per epoch, after the checkpoint is saved
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.pipeline, "barrier", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_video.main(parser.parse_args([*flags, "--savename", "cut"]))
    interrupted = workdir / "saved_models" / "cut_checkpoint.pth.tar"
    checkpoint = read_checkpoint(interrupted)
    assert checkpoint["epoch"] == 1 and checkpoint["lr_scheduler"]["last_epoch"] == 8  # 8 iterations per epoch
    older = {k: v for k, v in checkpoint.items() if k not in ("lr_scheduler", "args")}
    torch.save(older, workdir / "older.pth.tar")
    train_video.main(parser.parse_args([*flags, "--savename", "cut", "--resume", str(interrupted)]))
    train_video.main(parser.parse_args([*flags, "--savename", "older", "--resume", "older.pth.tar"]))

    full = final_state(workdir / "saved_models", "full")
    for name in ("cut", "older"):
        resumed = final_state(workdir / "saved_models", name)
        assert full.keys() == resumed.keys()
        assert [k for k in full if not torch.equal(full[k], resumed[k])] == [], name


def test_amp_bf16_training_gives_finite_losses(tiny_root: Path, workdir: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes = []
    autocast = app.engine.autocast

    def recording_autocast(device: torch.device, amp_dtype: torch.dtype | None):  # noqa: ANN202
        dtypes.append(amp_dtype)
        return autocast(device, amp_dtype)

    monkeypatch.setattr(app.engine, "autocast", recording_autocast)
    code, out, err = run_in_process(train_video, [*model_flags(tiny_root), "--amp", "--nb_epoch", "1",
                                                  "--print_freq", "1", "--savename", "amp"], capsys)
    assert code == 0, err
    assert set(dtypes) == {torch.bfloat16}
    losses = [float(v) for v in re.findall(r"(?<!_)loss (\S+)", out)]
    assert len(losses) >= 8 and all(math.isfinite(v) for v in losses), out  # 8 iterations + the epoch line
    assert all(torch.isfinite(v).all() for v in final_state(workdir / "saved_models", "amp").values()
               if v.is_floating_point())


# ------------------------------------------------------------------------------- DDP and the image script

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_launcher() -> tuple[str, ...]:
    """``python -m torch.distributed.run`` with 2 processes on a free port."""
    return "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())


def torchrun(cwd: Path, script: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(cwd, *torchrun_launcher(), script, *args)


@pytest.fixture(scope="module")
def ddp_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 epochs of the training script in 2 processes (torchrun, gloo on the CPU)."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no torch.distributed gloo backend")
    work = tmp_path_factory.mktemp("ddp")
    proc = succeeded(torchrun(work, TRAIN_VIDEO, *model_flags(tiny_root), "--nb_epoch", "2", "--print_freq", "1",
                              "--savename", "ddp"))
    return work, proc


def test_two_process_ddp_training_on_gloo(ddp_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    work, proc = ddp_run
    # rank 0 alone logs and saves; each rank trains on half of the 17 training frames: 4 batches of 2
    assert proc.stdout.count("epoch 1/2") == 1 and proc.stdout.count("epoch 2/2") == 1
    assert "iter 4/4" in proc.stdout and "iter 5/" not in proc.stdout
    assert "epoch 2/2" in (work / "logs" / "ddp.log").read_text()
    assert sorted(p.name for p in (work / "saved_models").iterdir()) == \
        ["ddp_checkpoint.pth.tar", "ddp_model_best.pth.tar"]
    checkpoint = read_checkpoint(work / "saved_models" / "ddp_checkpoint.pth.tar")
    assert checkpoint["epoch"] == 2 and all(k.startswith("module.") for k in checkpoint["state_dict"])


def test_interrupted_and_resumed_ddp_run_ends_with_the_same_weights(
        ddp_run: tuple[Path, subprocess.CompletedProcess], tiny_root: Path, tmp_path: Path) -> None:
    """Each rank must get its own random state back (they were seeded seed + rank), not rank 0's."""
    flags = [*model_flags(tiny_root), "--nb_epoch", "2", "--savename", "cut"]
    interrupted_after_first_epoch(tmp_path, TRAIN_VIDEO, *flags, launcher=torchrun_launcher())
    interrupted = tmp_path / "saved_models" / "cut_checkpoint.pth.tar"
    assert read_checkpoint(interrupted)["epoch"] == 1
    succeeded(torchrun(tmp_path, TRAIN_VIDEO, *flags, "--resume", str(interrupted)))

    full = final_state(ddp_run[0] / "saved_models", "ddp")
    resumed = final_state(tmp_path / "saved_models", "cut")
    assert [k for k in full if not torch.equal(full[k], resumed[k])] == []


@pytest.fixture(scope="module")
def image_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image script trained for 1 epoch on the synthvid image export."""
    work = tmp_path_factory.mktemp("image")
    succeeded(run_cli(work, TRAIN_IMAGE, *model_flags(tiny_root, "synthvid"), "--nb_epoch", "1",
                      "--savename", "image"))
    return work


def test_image_script_trains_and_tests_on_the_synthvid_export(image_run: Path, tiny_root: Path) -> None:
    proc = succeeded(run_cli(image_run, TRAIN_IMAGE, *model_flags(tiny_root, "synthvid"), "--savename", "image",
                             "--test", "--resume", "saved_models/image_checkpoint.pth.tar",
                             "--test_split", "test", "--save_pred", "pred.jsonl"))
    items = safe_load(tiny_root / "synthvid" / "synthvid_test.pth", what="index file")
    assert re.search(rf"synthvid test: accuracy [01]\.\d{{4}}  mean IoU [01]\.\d{{4}}  centre accuracy [01]\.\d{{4}}"
                     rf"  \({len(items)} samples\)", proc.stdout), proc.stdout
    assert [r["image"] for r in read_predictions(image_run / "pred.jsonl")] == [item[0] for item in items]


# ------------------------------------------------------------------------------------------ bad input

def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Non-zero exit and exactly one line on stderr, 'error: ...', containing every fragment."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_resume_of_a_missing_checkpoint_fails_cleanly(tiny_root: Path, tmp_path: Path) -> None:
    proc = run_cli(tmp_path, TRAIN_VIDEO, *model_flags(tiny_root), "--nb_epoch", "1", "--savename", "new",
                   "--resume", "nowhere.pth.tar")
    assert_clean_error(proc.returncode, proc.stderr, "checkpoint not found: nowhere.pth.tar")
    assert files(tmp_path) == {}


def test_resume_of_a_truncated_checkpoint_fails_cleanly(chain: Chain, tiny_root: Path, workdir: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    data = chain.checkpoint.read_bytes()
    (workdir / "truncated.pth.tar").write_bytes(data[: len(data) // 2])
    before = files(workdir)
    code, _, err = run_in_process(test_video, [*model_flags(tiny_root), "--test", "--resume", "truncated.pth.tar",
                                               "--save_pred", "pred.jsonl"], capsys)
    assert_clean_error(code, err, "truncated.pth.tar", "truncated")
    assert files(workdir) == before


def test_image_checkpoint_in_the_video_script_lists_the_missing_corr_conv_keys(
        image_run: Path, tiny_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = image_run / "saved_models" / "image_checkpoint.pth.tar"
    code, _, err = run_in_process(test_video, [*model_flags(tiny_root), "--test", "--resume", str(checkpoint)],
                                  capsys)
    assert_clean_error(code, err, str(checkpoint), "CoGroundingModel", "missing keys: corr_conv.0.0.conv.weight")
    assert files(workdir) == {}


def test_post_processing_takes_the_input_size_the_cache_records(chain: Chain, tiny_root: Path, workdir: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    flags = data_flags(tiny_root)
    del flags[flags.index("--size"):flags.index("--size") + 2]  # the default 256; the cache was written at 64
    code, out, _ = run_in_process(post_processing, [*flags, "--no_progress", "--cache_dir", str(chain.cache),
                                                    "--save_pred", "pp.jsonl"], capsys)
    assert code == 0 and "--size 64, the input size the cache records" in out
    assert read_predictions(workdir / "pp.jsonl") == read_predictions(chain.work / "pp.jsonl")


def test_post_processing_of_an_empty_cache_folder_fails_cleanly(tiny_root: Path, workdir: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    (workdir / "empty").mkdir()
    code, _, err = run_in_process(post_processing, [*data_flags(tiny_root), "--no_progress", "--cache_dir", "empty",
                                                    "--save_pred", "pp.jsonl"], capsys)
    assert_clean_error(code, err, "cache folder empty holds no cache files")
    assert files(workdir) == {}


def test_post_processing_of_a_cache_with_a_missing_frame_fails_cleanly(chain: Chain, tiny_root: Path, workdir: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(chain.cache, workdir / "cache")
    missing = sorted((workdir / "cache").rglob("*.pth"))[3]
    missing.unlink()
    before = files(workdir)
    code, _, err = run_in_process(post_processing, [*data_flags(tiny_root), "--no_progress", "--cache_dir", "cache",
                                                    "--save_pred", "pp.jsonl"], capsys)
    assert_clean_error(code, err, "1 of 9 frame files are missing", str(missing.relative_to(workdir)))
    assert files(workdir) == before


def test_save_pred_to_an_existing_file_needs_overwrite(chain: Chain, tiny_root: Path, workdir: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    (workdir / "pred.jsonl").write_text("keep me\n")
    code, _, err = run_in_process(test_video, [*model_flags(tiny_root), "--test", "--resume", str(chain.checkpoint),
                                               "--save_pred", "pred.jsonl"], capsys)
    assert_clean_error(code, err, "--save_pred pred.jsonl already exists", "--overwrite")
    assert files(workdir) == {"pred.jsonl": b"keep me\n"}


def test_training_over_an_existing_checkpoint_needs_resume_or_overwrite(chain: Chain, tiny_root: Path,
                                                                        workdir: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    (workdir / "saved_models").mkdir()
    shutil.copy(chain.checkpoint, workdir / "saved_models" / "tiny_checkpoint.pth.tar")
    before = files(workdir)
    code, _, err = run_in_process(train_video, [*model_flags(tiny_root), "--nb_epoch", "1", "--savename", "tiny"],
                                  capsys)
    assert_clean_error(code, err, "tiny_checkpoint.pth.tar already exists", "--resume", "--overwrite")
    assert files(workdir) == before


def test_a_run_without_lstm_is_refused(tiny_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    flags = [f for f in model_flags(tiny_root) if f != "--lstm"]
    code, _, err = run_in_process(train_video, [*flags, "--nb_epoch", "1"], capsys)
    assert_clean_error(code, err, "pass --lstm", "no BERT checkpoint of them exists")
    assert files(workdir) == {}


def test_resume_with_flags_that_change_the_run_is_refused(chain: Chain, tiny_root: Path, workdir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    shutil.copy(chain.epoch1, workdir / "epoch1.pth.tar")
    before = files(workdir)
    code, _, err = run_in_process(train_video, [*model_flags(tiny_root), "--nb_epoch", "3", "--lr", "0.001",
                                                "--savename", "tiny", "--resume", "epoch1.pth.tar"], capsys)
    assert code == 2
    assert_clean_error(code, err, "--resume epoch1.pth.tar was trained with --lr 0.0001 --nb_epoch 2",
                       "this run has --lr 0.001 --nb_epoch 3")
    assert files(workdir) == before


def test_the_test_script_checks_the_cache_folder_before_work_also_without_test(chain: Chain, tiny_root: Path,
                                                                               workdir: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """test_semantic_attention_cogrounding.py always evaluates, with or without --test (the reference flag)."""
    (workdir / "cache" / "tiny" / "vid").mkdir(parents=True)
    (workdir / "cache" / "tiny" / "vid" / "keep.pth").write_bytes(b"mine")
    before = files(workdir)
    code, _, err = run_in_process(test_video, [*model_flags(tiny_root), "--savename", "tiny", "--cache",
                                               "--resume", str(chain.checkpoint)], capsys)
    assert code == 2
    assert_clean_error(code, err, "--cache_dir cache/tiny already exists and is not empty", "--overwrite")
    assert files(workdir) == before
