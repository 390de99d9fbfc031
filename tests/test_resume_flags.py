"""--resume checks the training flags stored in the checkpoint: a flag that changes the run is refused, one that
does not is warned about, and a checkpoint without stored flags (the authors') resumes with a warning."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from model import SMALL_CFG
from train_semantic_attention_cogrounding import get_args_parser
from utils.checkpoint import check_resume_flags, training_flags
from utils.io import UserInputError

FLAGS = ["--lstm", "--cfg", str(SMALL_CFG), "--size", "64", "--emb_size", "16", "--resume", "ckpt.pth.tar"]
LOGGER = logging.getLogger("test_resume_flags")


def stored(*extra: str) -> dict:
    """The checkpoint of a run with ``extra`` flags."""
    return {"args": training_flags(vars(get_args_parser().parse_args([*FLAGS, *extra])))}


def resume(checkpoint: dict, *extra: str) -> None:
    check_resume_flags(vars(get_args_parser().parse_args([*FLAGS, *extra])), checkpoint, LOGGER)


@pytest.mark.parametrize("flag, trained, now", [
    ("--nb_epoch", "100", "101"), ("--lr", "0.0001", "0.001"), ("--power", "0.9", "1.0"),
    ("--warmup_iters", "0", "50"), ("--optimizer", "RMSprop", "adamw"), ("--weight_decay", "0.0005", "0.0"),
    ("--backbone_lr_scale", "0.1", "1.0"), ("--batch_size", "8", "4"), ("--size", "64", "128"),
    ("--emb_size", "16", "32"), ("--seed", "13", "14"), ("--val_split", "test", "val"),
])
def test_a_flag_that_changes_the_run_is_refused_naming_both_values(flag, trained, now):
    with pytest.raises(UserInputError) as err:
        resume(stored(flag, trained), flag, now)
    message = str(err.value)
    assert f"was trained with {flag} " in message and f"this run has {flag} " in message
    assert trained.rstrip("0") in message.split("this run has")[0] and now.rstrip("0") in message.split("this run")[1]


@pytest.mark.parametrize("switch", ["--lr_per_iter", "--no_augment", "--amp", "--light", "--freeze_backbone"])
def test_a_switch_that_changes_the_run_is_refused(switch):
    with pytest.raises(UserInputError, match=f"was trained with {switch} False, this run has {switch} True"):
        resume(stored(), switch)


def test_every_differing_flag_is_named_in_one_message():
    with pytest.raises(UserInputError) as err:
        resume(stored(), "--nb_epoch", "3", "--lr", "0.5")
    assert "\n" not in str(err.value)
    assert "trained with --lr 0.0001 --nb_epoch 100, this run has --lr 0.5 --nb_epoch 3" in str(err.value)


def test_flags_that_do_not_change_the_run_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        resume(stored("--workers", "4", "--print_freq", "50"), "--workers", "0", "--print_freq", "10",
               "--no_progress", "--log_dir", "elsewhere")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    for part in ("--workers (4 -> 0)", "--print_freq (50 -> 10)", "--no_progress (False -> True)",
                 "--log_dir ('logs' -> 'elsewhere')"):
        assert part in message


def test_the_same_flags_resume_silently(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        resume(stored("--nb_epoch", "2"), "--nb_epoch", "2")
    assert caplog.records == []


def test_a_checkpoint_without_stored_flags_resumes_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        resume({"epoch": 3, "state_dict": {}}, "--nb_epoch", "7")
    assert len(caplog.records) == 1 and "holds no training flags" in caplog.records[0].getMessage()


def test_the_same_cfg_at_another_path_is_the_same_flag(tmp_path: Path):
    moved = shutil.copy(SMALL_CFG, tmp_path / "yolov3_small.cfg")
    resume(stored(), "--cfg", str(moved))
    edited = tmp_path / "edited.cfg"
    edited.write_text(SMALL_CFG.read_text() + "\n# edited\n")
    with pytest.raises(UserInputError, match="--cfg"):
        resume(stored(), "--cfg", str(edited))
