"""Darknet (YOLOv3) built from a Darknet cfg file, and its ``.weights`` format (docs/behaviour.md §3).

The grounding models use :meth:`Darknet.forward`, which returns the three feature taps: the *inputs* of
the ``[yoloconvolutional]`` blocks (normal convolutions marked in the cfg), coarse to fine by stride. Layer ``i``
of the cfg (``[net]`` excluded) is ``module_list[i]`` and owns ``conv_{i}`` / ``batch_norm_{i}``, so
released checkpoints and Darknet ``.weights`` files load by name / by order. :meth:`Darknet.forward_detect`
runs the whole network for the plain YOLO detector of ``tools/detect.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from utils.io import UserInputError, check_not_folder, read_text

LEAKY_SLOPE = 0.1
CONV_TYPES = ("convolutional", "yoloconvolutional")
BLOCK_TYPES = (*CONV_TYPES, "shortcut", "route", "upsample", "maxpool", "yolo")
ACTIVATIONS = ("leaky", "linear")
DEFAULT_CFG = Path(__file__).with_name("yolov3.cfg")  # the reference cfg (byte-for-byte, never edited)
SMALL_CFG = Path(__file__).with_name("yolov3_small.cfg")  # small cfg for CPU training
TINY_CFG = Path(__file__).with_name("yolov3_tiny_grounding.cfg")  # yolov3-tiny's layers, for its COCO weights


def parse_cfg(path: str | os.PathLike) -> list[dict[str, str]]:
    """Blocks of a Darknet cfg in file order, each ``{'type': name, key: value, ...}``; the first is ``[net]``."""
    path = Path(path)
    blocks: list[dict[str, str]] = []
    for lineno, raw in enumerate(read_text(path, "Darknet cfg").splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            blocks.append({"type": line[1:-1].strip()})
        elif "=" in line and blocks:
            key, value = line.split("=", 1)
            blocks[-1][key.strip()] = value.strip()
        else:
            raise UserInputError(f"{path}: line {lineno}: expected '[section]' or 'key=value', found {raw!r}")
    if not blocks or blocks[0]["type"] != "net":
        raise UserInputError(f"{path}: a Darknet cfg starts with a [net] block")
    return blocks


class _BlockReader:
    """Typed access to the keys of one cfg block; every error names the file, the block index and type."""

    def __init__(self, path: Path, index: int, block: dict[str, str]) -> None:
        self.path, self.index, self.block = path, index, block

    def error(self, problem: str) -> UserInputError:
        return UserInputError(f"{self.path}: block {self.index} [{self.block['type']}]: {problem}")

    def ints(self, key: str, default: list[int] | None = None) -> list[int]:
        if key not in self.block:
            if default is None:
                raise self.error(f"missing key '{key}'")
            return default
        try:
            return [int(v) for v in self.block[key].split(",") if v.strip()]
        except ValueError:
            raise self.error(f"'{key}' must be integers, found {self.block[key]!r}") from None

    def int(self, key: str, default: int | None = None) -> int:
        values = self.ints(key, None if default is None else [default])
        if len(values) != 1:
            raise self.error(f"'{key}' must be one integer, found {self.block[key]!r}")
        return values[0]

    def layer(self, offset: int) -> int:
        """Absolute layer index of a ``from``/``layers`` entry (negative = relative to this block)."""
        j = self.index + offset if offset < 0 else offset
        if not 0 <= j < self.index:
            raise self.error(f"refers to layer {offset}, which is not an earlier layer")
        return j


@dataclass(frozen=True)
class YoloHead:
    """One ``[yolo]`` block: the anchors of its mask (A, 2) in input pixels and the class count."""

    layer: int
    anchors: torch.Tensor
    classes: int


class Darknet(nn.Module):
    """A Darknet network built from ``cfg_path`` (block semantics of docs/behaviour.md §3)."""

    def __init__(self, cfg_path: str | os.PathLike) -> None:
        super().__init__()
        self.cfg_path = Path(cfg_path)
        self.frozen = False
        net, *self.blocks = parse_cfg(self.cfg_path)
        net_reader = _BlockReader(self.cfg_path, -1, net)
        self.module_list = nn.ModuleList()
        self.sources: list[list[int]] = []  # layers whose outputs layer i reads (-1: the network input)
        self.yolo_heads: list[YoloHead] = []
        channels, strides = [net_reader.int("channels", 3)], [1]  # per layer output, entry 0 = the input
        for i, block in enumerate(self.blocks):
            module, srcs, out_ch, stride = self._build_block(_BlockReader(self.cfg_path, i, block), channels, strides)
            self.module_list.append(module)
            self.sources.append(srcs)
            channels.append(out_ch)
            strides.append(stride)
        # coarse to fine (stable): a cfg may mark a fine map before a coarse one (yolov3_tiny_grounding.cfg)
        marked = [i for i, b in enumerate(self.blocks) if b["type"] == "yoloconvolutional"]
        self.taps = sorted(marked, key=lambda t: -strides[t])
        self.feature_channels = [channels[t] for t in self.taps]  # channels[t] = output of layer t - 1
        self.feature_strides = [strides[t] for t in self.taps]
        self._feature_layers = _closure(self.sources, [t - 1 for t in self.taps])
        self._release_after = _last_reads(self.sources, self._feature_layers, self.taps)

    def _build_block(
        self, rd: _BlockReader, channels: list[int], strides: list[int]
    ) -> tuple[nn.Sequential, list[int], int, int]:
        """Module, sources, output channels and output stride of block ``rd.index``."""
        i, kind = rd.index, rd.block["type"]
        in_ch, in_stride = channels[-1], strides[-1]
        module = nn.Sequential()
        if kind in CONV_TYPES:
            bn, filters = rd.int("batch_normalize", 0), rd.int("filters")
            size, stride = rd.int("size"), rd.int("stride", 1)
            padding = size // 2 if rd.int("pad", 0) else rd.int("padding", 0)
            activation = rd.block.get("activation", "linear")
            if activation not in ACTIVATIONS:
                raise rd.error(f"unsupported activation {activation!r} (supported: {', '.join(ACTIVATIONS)})")
            module.add_module(f"conv_{i}", nn.Conv2d(in_ch, filters, size, stride, padding, bias=not bn))
            if bn:
                module.add_module(f"batch_norm_{i}", nn.BatchNorm2d(filters))
            if activation == "leaky":
                module.add_module(f"leaky_{i}", nn.LeakyReLU(LEAKY_SLOPE))
            return module, [i - 1], filters, in_stride * stride
        if kind == "maxpool":
            size, stride = rd.int("size"), rd.int("stride", 1)
            if size == 2 and stride == 1:  # keeps the size: pad right/bottom with zeros first (docs/behaviour.md §3)
                module.add_module(f"pad_{i}", nn.ZeroPad2d((0, 1, 0, 1)))
            module.add_module(f"maxpool_{i}", nn.MaxPool2d(size, stride, padding=(size - 1) // 2))
            return module, [i - 1], in_ch, in_stride * stride
        if kind == "upsample":
            stride = rd.int("stride", 2)
            if stride < 1 or in_stride % stride:
                raise rd.error(f"cannot upsample a stride-{in_stride} map by {stride}")
            module.add_module(f"upsample_{i}", nn.Upsample(scale_factor=stride, mode="nearest"))
            return module, [i - 1], in_ch, in_stride // stride
        if kind == "route":
            if rd.int("groups", 1) != 1:
                raise rd.error("grouped routes are not supported")
            srcs = [rd.layer(v) for v in rd.ints("layers")]
            if not srcs or len({strides[j + 1] for j in srcs}) != 1:
                raise rd.error(f"routed layers {srcs} must be one or more layers of the same stride")
            return module, srcs, sum(channels[j + 1] for j in srcs), strides[srcs[0] + 1]
        if kind == "shortcut":
            j = rd.layer(rd.int("from"))
            if rd.block.get("activation", "linear") != "linear":
                raise rd.error("only linear shortcuts are supported")
            if (channels[j + 1], strides[j + 1]) != (in_ch, in_stride):
                raise rd.error(f"layer {j} ({channels[j + 1]} ch) cannot be added to layer {i - 1} ({in_ch} ch)")
            return module, [i - 1, j], in_ch, in_stride
        if kind == "yolo":
            mask, classes = rd.ints("mask"), rd.int("classes")
            anchors = rd.ints("anchors")
            if len(anchors) % 2 or any(not 0 <= m < len(anchors) // 2 for m in mask):
                raise rd.error(f"mask {mask} does not fit the {len(anchors) // 2} anchor pairs")
            if in_ch != len(mask) * (5 + classes):
                raise rd.error(f"expects {len(mask)} x (5 + {classes}) input channels, the layer before has {in_ch}")
            pairs = torch.tensor(anchors, dtype=torch.float32).view(-1, 2)[mask]  # (A, 2)
            self.yolo_heads.append(YoloHead(i, pairs, classes))
            return module, [i - 1], in_ch, in_stride
        raise rd.error(f"unknown block type (supported: {', '.join(BLOCK_TYPES)})")

    def _layer_output(self, i: int, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        """Output of layer ``i`` given the network input ``x`` and the earlier outputs."""
        kind, srcs = self.blocks[i]["type"], self.sources[i]
        prev = x if i == 0 else outputs[i - 1]
        if kind == "route":
            return torch.cat([outputs[j] for j in srcs], dim=1)
        if kind == "shortcut":
            return prev + outputs[srcs[1]]
        if kind == "yolo":
            return prev
        return self.module_list[i](prev)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature taps of ``x`` (B, 3, S, S), coarse to fine: (B, C_s, S/stride_s, S/stride_s).

        Only the layers the taps depend on run (the detection heads' outputs are not used here), and each
        output is dropped after its last reader, so inference holds a few maps at a time, not all of them.
        """
        outputs: list[torch.Tensor | None] = []
        features: dict[int, torch.Tensor] = {}
        for i in range(max(self.taps, default=-1) + 1):
            if i in self.taps:
                features[i] = x if i == 0 else outputs[i - 1]
            outputs.append(self._layer_output(i, x, outputs) if i in self._feature_layers else None)
            for j in self._release_after.get(i, ()):
                outputs[j] = None
        return [features[t] for t in self.taps]

    def freeze(self) -> None:
        """Fixed features: no gradients, and batch norm keeps its running statistics even under ``train()``."""
        self.requires_grad_(False)
        self.frozen = True
        self.eval()

    def train(self, mode: bool = True) -> Darknet:
        return super().train(mode and not self.frozen)

    def detection_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers :meth:`forward` never runs (the detection heads): unused by grounding."""
        return [p for i, module in enumerate(self.module_list) if i not in self._feature_layers
                for p in module.parameters()]

    def forward_detect(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw maps entering each ``[yolo]`` block, (B, A * (5 + classes), h, w), in cfg order."""
        outputs: list[torch.Tensor | None] = []
        for i in range(len(self.blocks)):
            outputs.append(self._layer_output(i, x, outputs))
        return [outputs[head.layer] for head in self.yolo_heads]

    def darknet_tensors(self) -> list[torch.Tensor]:
        """Parameters and buffers in ``.weights`` order (docs/behaviour.md §3): per conv, the batch norm's bias,
        weight, running mean and variance, then the conv weight."""
        tensors = []
        for i, block in enumerate(self.blocks):
            if block["type"] not in CONV_TYPES:
                continue
            conv = getattr(self.module_list[i], f"conv_{i}")
            bn = getattr(self.module_list[i], f"batch_norm_{i}", None)
            if bn is None:
                tensors += [conv.bias, conv.weight]
            else:
                tensors += [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
        return tensors

    def load_darknet_weights(self, path: str | os.PathLike) -> tuple[int, int, int, int]:
        """Load a Darknet ``.weights`` file; returns its header ``(major, minor, revision, seen)``.

        A file whose value count differs from what the cfg needs is an error, never a partial load.
        """
        path = Path(path)
        check_not_folder(path, "Darknet weights")
        if not path.is_file():
            raise UserInputError(f"Darknet weights not found: {path}")
        data = path.read_bytes()
        if len(data) < 12:
            raise UserInputError(f"Darknet weights {path}: {len(data)} bytes, too short for the header")
        major, minor, revision = np.frombuffer(data, dtype="<i4", count=3).tolist()
        seen_dtype = _seen_dtype(major, minor)
        offset = 12 + np.dtype(seen_dtype).itemsize
        if len(data) < offset:
            raise UserInputError(f"Darknet weights {path}: {len(data)} bytes, too short for the header")
        seen = int(np.frombuffer(data, dtype=seen_dtype, count=1, offset=12)[0])
        tensors = self.darknet_tensors()
        expected = sum(t.numel() for t in tensors)
        n_bytes = len(data) - offset
        if n_bytes != 4 * expected:
            found = f"{n_bytes // 4}" if n_bytes % 4 == 0 else f"{n_bytes} bytes (not a whole number of values)"
            raise UserInputError(
                f"Darknet weights {path} do not fit {self.cfg_path}: expected {expected} float32 values after "
                f"the header, found {found}"
            )
        values = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=offset).copy())
        chunks = values.split([t.numel() for t in tensors])
        for tensor, chunk in zip(tensors, chunks):
            if not bool(torch.isfinite(chunk).all()):
                name = next(n for n, t in [*self.named_parameters(), *self.named_buffers()] if t is tensor)
                raise UserInputError(f"Darknet weights {path}: the values of {name} hold NaN or inf (a damaged file)")
        with torch.no_grad():
            for tensor, chunk in zip(tensors, chunks):
                tensor.copy_(chunk.view_as(tensor))
        return major, minor, revision, seen


def _seen_dtype(major: int, minor: int) -> str:
    """The header's ``seen`` counter is int64 from format version 0.2 on, int32 before."""
    return "<i8" if major * 10 + minor >= 2 else "<i4"


def _closure(sources: list[list[int]], targets: list[int]) -> set[int]:
    """Layers whose outputs are needed to compute the outputs of ``targets``."""
    needed: set[int] = set()
    stack = list(targets)
    while stack:
        j = stack.pop()
        if j >= 0 and j not in needed:
            needed.add(j)
            stack.extend(sources[j])
    return needed


def _last_reads(sources: list[list[int]], layers: set[int], taps: list[int]) -> dict[int, list[int]]:
    """``{i: layers whose outputs nobody reads after step i}`` of :meth:`Darknet.forward` (tap t reads t - 1)."""
    last: dict[int, int] = {}
    readers = [(i, j) for i in layers for j in sources[i]] + [(t, t - 1) for t in taps]
    for i, j in readers:
        if j >= 0:
            last[j] = max(last.get(j, i), i)
    release: dict[int, list[int]] = {}
    for j, i in last.items():
        release.setdefault(i, []).append(j)
    return release
