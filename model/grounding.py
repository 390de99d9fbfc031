"""SL-Att: one-stage visual grounding with subject and location attention (image model, docs/behaviour.md §4).

Darknet features -> 1x1 ConvBNReLU + L2 norm (``fvisu``), phrase -> LSTM sentence vector (``flang``) and two
attended phrase vectors (subject ``q``, location), then per scale a YOLO-style head on
``cat(fvisu, flang, coord)``. The head's confidence is multiplied by the subject score (``<q, fvisu>``) and a
location score computed over all cells of all scales.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from model.darknet import DEFAULT_CFG, Darknet
from model.language import PhraseAttention, RNNEncoder, trim_padding
from model.layers import ConvBatchNormReLU, coord_map, l2_normalize
from utils.amp import autocast_off
from utils.geometry import NUM_ANCHORS_PER_SCALE, NUM_SCALES, flatten_cell_maps
from utils.io import UserInputError

COORD_CHANNELS = 8
LOC_EPS = 1e-6  # min-max normalisation of the location score (docs/behaviour.md §4.7)
LAYOUTS = ("pairs", "window")  # which frames of a sample are grounded: every one, or the centre


def _head(in_ch: int, emb_size: int, light: bool) -> tuple[nn.Sequential, nn.Sequential]:
    """``fcn_emb`` and ``fcn_out`` of one scale (docs/behaviour.md §4.4); output (B, 3 anchors x 5, h, w)."""
    out_ch = NUM_ANCHORS_PER_SCALE * 5
    if light:
        return (
            nn.Sequential(ConvBatchNormReLU(in_ch, emb_size, 1)),
            nn.Sequential(nn.Conv2d(emb_size, out_ch, 1)),
        )
    return (
        nn.Sequential(
            ConvBatchNormReLU(in_ch, emb_size, 1),
            ConvBatchNormReLU(emb_size, emb_size, 3, padding=1),
            ConvBatchNormReLU(emb_size, emb_size, 1),
        ),
        nn.Sequential(ConvBatchNormReLU(emb_size, emb_size // 2, 1), nn.Conv2d(emb_size // 2, out_ch, 1)),
    )


class GroundingModel(nn.Module):
    """The SL-Att image model. Submodule names (and their order) are the reference's, so checkpoints load.

    ``forward(images (B, 1, 3, S, S), word_id (B, L))`` returns a dict of per-scale lists (coarse to fine):
    ``pred_anchor`` (B, 3, 5, h, w) with the confidence already multiplied by ``sim`` and ``loc``,
    ``sim``, ``loc``, ``only_obj`` (B, h, w), ``visual`` (B, E, h, w) (the map ``sim`` used), and
    ``subject`` (B, E), the L2-normalised subject phrase vector.
    """

    def __init__(
        self,
        vocab_size: int,
        cfg_path: str | os.PathLike = DEFAULT_CFG,
        image_size: int = 256,
        emb_size: int = 512,
        light: bool = False,
    ) -> None:
        super().__init__()
        self.visumodel = Darknet(cfg_path)
        channels, strides = self.visumodel.feature_channels, self.visumodel.feature_strides
        if len(channels) != NUM_SCALES or strides != sorted(strides, reverse=True):
            raise UserInputError(
                f"{cfg_path}: the grounding model needs {NUM_SCALES} [yoloconvolutional] feature taps from "
                f"coarse to fine, found strides {strides}"
            )
        if image_size <= 0 or image_size % max(strides):
            raise UserInputError(
                f"image size {image_size} must be a positive multiple of {max(strides)} for {cfg_path}"
            )
        self.image_size = image_size
        self.num_cells = sum((image_size // s) ** 2 for s in strides)  # N (1344 at 256 px; the reference hard-codes it)

        self.textmodel = RNNEncoder(vocab_size, emb_size)
        self.sub_attn = PhraseAttention(2 * emb_size)
        self.loc_embedding = nn.Sequential(
            nn.Linear(COORD_CHANNELS, COORD_CHANNELS), nn.BatchNorm1d(COORD_CHANNELS), nn.ReLU()
        )
        self.loc_text_embedding = nn.Sequential(
            nn.Linear(self.num_cells, emb_size), nn.BatchNorm1d(emb_size), nn.ReLU()
        )
        self.loc_attn = PhraseAttention(2 * emb_size)
        self.mapping_visu = nn.ModuleList(ConvBatchNormReLU(c, emb_size, 1) for c in channels)
        self.mapping_lang = nn.Sequential(
            nn.Linear(2 * emb_size, emb_size),
            nn.BatchNorm1d(emb_size),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(emb_size, emb_size),
            nn.BatchNorm1d(emb_size),
            nn.ReLU(),
        )
        heads = [_head(2 * emb_size + COORD_CHANNELS, emb_size, light) for _ in range(NUM_SCALES)]
        self.fcn_emb = nn.ModuleList(emb for emb, _ in heads)
        self.fcn_out = nn.ModuleList(out for _, out in heads)

    def frame_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``fvisu``: backbone -> ``mapping_visu`` -> L2 norm over channels, per scale (F, E, h, w) (docs/behaviour.md
        §4.1)."""
        return [l2_normalize(m(f), dim=1) for m, f in zip(self.mapping_visu, self.visumodel(images))]

    def encode_phrase(self, word_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``flang``, subject and location phrase vectors of ``word_id`` (B, L), each (B, E), L2-normalised.

        Always float32: the phrase network is tiny and its vectors scale every confidence.
        """
        word_id = trim_padding(word_id)
        with autocast_off(word_id.device):
            context, embedded, sentence = self.textmodel(word_id)  # (B, L, 2E), (B, L, E), (B, 2E)
            flang = l2_normalize(self.mapping_lang(sentence), dim=1)
            subject = l2_normalize(self.sub_attn(context, embedded, word_id), dim=1)
            location = l2_normalize(self.loc_attn(context, embedded, word_id), dim=1)
        return flang, subject, location

    def location_score(self, obj: list[torch.Tensor], location: torch.Tensor) -> list[torch.Tensor]:
        """Location score over all N cells (docs/behaviour.md §4.7), min-max normalised per sample; per scale (B, h,
        w). Always float32: the min-max normalisation amplifies rounding."""
        with autocast_off(location.device):
            return self._location_score([o.float() for o in obj], location.float())

    def _location_score(self, obj: list[torch.Tensor], location: torch.Tensor) -> list[torch.Tensor]:
        b = location.shape[0]
        shapes = [o.shape[1:] for o in obj]
        n = sum(h * w for h, w in shapes)
        if n != self.num_cells:
            raise ValueError(
                f"the input gives {n} cells but the model was built for image_size={self.image_size} "
                f"({self.num_cells} cells)"
            )
        coord = torch.cat(
            [coord_map(b, h, w, location.device, location.dtype).flatten(2) for h, w in shapes], dim=2
        ).transpose(1, 2)  # (B, N, 8)
        emb = l2_normalize(self.loc_embedding(coord.reshape(b * n, -1)).view(b, n, -1), dim=2)  # (B, N, 8)
        obj_n = l2_normalize(flatten_cell_maps(obj), dim=1)  # (B, N)
        # The reference applies Linear(N, E) to the relation R = (emb emb^T) * obj_n (B, N, N); by associativity
        # R W^T = emb (emb^T diag(obj_n) W^T), which never builds the N x N matrix (same function, ~N/16 fewer
        # multiply-adds and no O(N^2) memory).
        linear, bn_relu = self.loc_text_embedding[0], self.loc_text_embedding[1:]
        weighted = torch.bmm(emb.transpose(1, 2), obj_n[:, :, None] * linear.weight.t())  # (B, 8, E)
        pos = torch.bmm(emb, weighted) + linear.bias  # (B, N, E) = Linear(R)
        pos = l2_normalize(bn_relu(pos.reshape(b * n, -1)).view(b, n, -1), dim=2)  # (B, N, E)
        loc = (pos * location[:, None, :]).sum(2)  # (B, N)
        low, high = loc.min(dim=1, keepdim=True).values, loc.max(dim=1, keepdim=True).values
        loc = (loc - low) / (high - low + LOC_EPS)
        return [part.view(b, h, w) for part, (h, w) in zip(loc.split([h * w for h, w in shapes], dim=1), shapes)]

    def ground(self, visual: list[torch.Tensor], word_id: torch.Tensor) -> dict:
        """The head on per-scale visual maps (B, E, h, w) (``fvisu`` or a co-grounded map) and phrases (B, L)."""
        flang, subject, location = self.encode_phrase(word_id)
        raw, sim, only_obj = [], [], []
        for s, v in enumerate(visual):
            b, _, h, w = v.shape
            # the reference convolves cat(v, flang tiled over the grid, coord) (B, 2E + 8, h, w); the first 1x1
            # conv is applied to the parts instead, the language vector once per sample and the coord map once
            emb = self.fcn_emb[s][0].forward_concat(
                [v, flang[:, :, None, None], coord_map(1, h, w, v.device, v.dtype)]
            )  # (B, E, h, w)
            hidden = self.fcn_out[s][:-1](self.fcn_emb[s][1:](emb))
            with autocast_off(v.device):  # the confidences decide the arg-max box: their last conv and product in fp32
                out = self.fcn_out[s][-1](hidden.float()).unflatten(1, (NUM_ANCHORS_PER_SCALE, 5))  # (B, 3, 5, h, w)
                sim.append((subject[:, :, None, None] * v.float()).sum(1))  # (B, h, w)
            raw.append(out)
            only_obj.append(out[:, :, 4].mean(1))  # (B, h, w)
        loc = self.location_score([o * s for o, s in zip(only_obj, sim)], location)
        pred_anchor = [
            torch.cat([p[:, :, :4], (p[:, :, 4] * s[:, None] * lc[:, None]).unsqueeze(2)], dim=2)
            for p, s, lc in zip(raw, sim, loc)
        ]  # (B, 3, 5, h, w) each, conf <- conf * sim * loc (docs/behaviour.md §4.8)
        return {"pred_anchor": pred_anchor, "sim": sim, "loc": loc, "only_obj": only_obj, "visual": visual,
                "subject": subject}

    def forward(self, images: torch.Tensor, word_id: torch.Tensor, layout: str = "window") -> dict:
        """Ground ``word_id`` (B, L) in ``images`` (B, 1, 3, S, S); see the class docstring for the outputs.

        The video model's input contract with one frame per sample, so ``layout`` ('pairs': every frame grounded;
        'window': the centre frame) grounds that frame either way.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if images.dim() != 5 or images.shape[1] != 1:
            raise ValueError(f"the image model grounds one frame per sample: expected (B, 1, 3, S, S), got "
                             f"{tuple(images.shape)}")
        return self.ground(self.frame_features(images[:, 0]), word_id)
