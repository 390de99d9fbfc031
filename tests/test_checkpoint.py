"""Reading checkpoints in the reference format and loading them strictly (docs/behaviour.md §4: released
checkpoints)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model import SMALL_CFG, build_grounding_model
from utils.checkpoint import load_model_state, read_checkpoint, state_dict_for_release
from utils.io import UserInputError

VOCAB = 12
SIZE = 64
EMB = 16


def small(kind: str, vocab: int = VOCAB, cfg: Path = SMALL_CFG, seed: int = 0):
    torch.manual_seed(seed)
    return build_grounding_model(kind, vocab, cfg, image_size=SIZE, emb_size=EMB)


def save_reference_format(model, path: Path) -> Path:
    """A checkpoint as the reference saves it: module.-prefixed keys, numpy best_loss, an optimizer state."""
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, weight_decay=5e-4)
    checkpoint = {
        "epoch": 3,
        "state_dict": state_dict_for_release(model),
        "best_loss": np.float64(0.4375),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint, path)
    return path


def test_release_state_dict_prefixes_every_key_with_module():
    keys = list(state_dict_for_release(small("image")))
    assert keys and all(k.startswith("module.") for k in keys)
    assert "module.visumodel.module_list.0.conv_0.weight" in keys


def test_reference_format_checkpoint_loads_every_key(tmp_path):
    source = small("video", seed=1)
    checkpoint = read_checkpoint(save_reference_format(source, tmp_path / "model_best.pth.tar"))
    assert checkpoint["epoch"] == 3 and checkpoint["best_loss"] == pytest.approx(0.4375)
    target = small("video", seed=2)
    load_model_state(target, checkpoint["state_dict"], source="model_best.pth.tar")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_best_loss_pickled_by_numpy_1_loads(tmp_path):
    # numpy 1.x pickles scalars as numpy.core.multiarray.scalar (numpy 2: numpy._core...): rewrite the name
    path = save_reference_format(small("image"), tmp_path / "new.pth")
    legacy = tmp_path / "legacy.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(legacy, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            dst.writestr(info, data)
    assert read_checkpoint(legacy)["best_loss"] == pytest.approx(0.4375)


def test_bare_state_dict_is_accepted(tmp_path):
    model = small("image")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    checkpoint = read_checkpoint(tmp_path / "bare.pth")
    load_model_state(small("image", seed=3), checkpoint["state_dict"], source="bare.pth")


def test_image_checkpoint_into_the_video_model_lists_the_missing_corr_conv_keys(tmp_path):
    checkpoint = read_checkpoint(save_reference_format(small("image"), tmp_path / "image.pth"))
    with pytest.raises(UserInputError) as err:
        load_model_state(small("video"), checkpoint["state_dict"], source=str(tmp_path / "image.pth"))
    message = str(err.value)
    assert "CoGroundingModel" in message and "image.pth" in message
    assert "missing keys: corr_conv.0.0.conv.weight" in message
    assert "unexpected" not in message


def test_different_vocabulary_names_the_embedding_and_both_shapes(tmp_path):
    checkpoint = read_checkpoint(save_reference_format(small("image", vocab=20), tmp_path / "v20.pth"))
    with pytest.raises(UserInputError) as err:
        load_model_state(small("image"), checkpoint["state_dict"], source="v20.pth")
    assert "textmodel.embedding.weight: checkpoint (20, 16) vs model (12, 16)" in str(err.value)


def test_different_cfg_names_the_backbone_keys(tmp_path):
    cfg = tmp_path / "wider.cfg"
    cfg.write_text(SMALL_CFG.read_text().replace("filters=16\n", "filters=24\n", 1))  # layer 0: 16 -> 24 filters
    checkpoint = read_checkpoint(save_reference_format(small("image", cfg=cfg), tmp_path / "wider.pth"))
    with pytest.raises(UserInputError) as err:
        load_model_state(small("image"), checkpoint["state_dict"], source="wider.pth")
    assert "visumodel.module_list.0.conv_0.weight: checkpoint (24, 3, 3, 3) vs model (16, 3, 3, 3)" in str(err.value)
    assert "visumodel.module_list.1.conv_1.weight: checkpoint (32, 24, 3, 3) vs model (32, 16, 3, 3)" in str(err.value)


def test_truncated_checkpoint_is_a_user_error(tmp_path):
    path = save_reference_format(small("image"), tmp_path / "model.pth")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError, match="model.pth"):
        read_checkpoint(path)


def test_file_without_a_state_dict_is_a_user_error(tmp_path):
    torch.save({"epoch": 1}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="neither a state dict nor a dict with a 'state_dict' entry"):
        read_checkpoint(tmp_path / "other.pth")
