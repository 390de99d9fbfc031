"""How peaked is the co-attention of a trained CG-SL-Att? Entropy and peak mass over the test windows.

    python -m bench.attention pretrained=RUN/seed_13/saved_models/cgslatt_model_best.pth.tar \\
        random=OTHER/seed_13/saved_models/cgslatt_model_best.pth.tar --data DATA [--out attention.md]

Every cell of a window's centre frame attends to the cells of each other frame with weights
``softmax_j(10 <x_i, y_j>)`` (model/cogrounding.py, docs/behaviour.md §5). Over the test windows whose five frames
are distinct (centre at least two frames from either end of its video; each distinct window once, the attention
does not depend on the sentence) this reports per scale the mean normalised entropy, entropy / log(number of
keys) (1: uniform, the attended map is the partner frame's average; 0: one key), and the mean peak mass (the
largest weight; 1 / keys for a uniform softmax), split by the centre frame clean vs hard when the set has
degradation labels (``VID/degradations_test.json``). Checkpoints given as LABEL=PATH with the same label (e.g. the
seeds of one backbone) are averaged, with the spread over them.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from app.analysis import CLEAN, HARD, Table, load_degradations, markdown_table
from app.grounder import Grounder
from dataset.vid_loader import VIDDataset
from model.cogrounding import ATTENTION_SCALE
from model.grounding import GroundingModel
from utils.cli import ArgumentParser, positive_int
from utils.io import atomic_write_text
from utils.windows import EVAL_FRAMES


def attention_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (M,): mean normalised entropy and mean peak weight of ``weights`` (M, P, queries, keys), rows
    summing to 1."""
    keys = weights.shape[-1]
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1) / math.log(keys)  # (M, P, q)
    return entropy.flatten(1).mean(1), weights.amax(-1).flatten(1).mean(1)


def window_attention(model: GroundingModel, images: torch.Tensor) -> list[torch.Tensor]:
    """Per scale (W, T - 1, hw, hw): the weights with which each cell of a window's centre frame attends to the
    cells of each other frame, ``softmax_j(10 <x_i, y_j>)`` over the frames' ``fvisu`` (docs/behaviour.md §5).

    They depend only on the layers SL-Att and CG-SL-Att share, so an SL-Att checkpoint gives the attention its
    CG-SL-Att starts from (``--pretrain``). ``images`` (W, T, 3, S, S), T odd."""
    w, t = images.shape[:2]
    c = t // 2
    weights = []
    for visual in GroundingModel.frame_features(model, images.flatten(0, 1)):  # per scale (W*T, E, h, w)
        cells = visual.flatten(2).transpose(1, 2).unflatten(0, (w, t)).float()  # (W, T, hw, E)
        partners = torch.cat([cells[:, :c], cells[:, c + 1:]], dim=1)  # (W, T-1, hw, E)
        weights.append(torch.softmax(ATTENTION_SCALE * cells[:, c, None] @ partners.transpose(2, 3), dim=-1))
    return weights


def measure(path: str, data: Path, batch_size: int, max_windows: int | None) -> dict[str, list[tuple]]:
    """Per scale, one ``(centre image, entropy, peak)`` per measured window of checkpoint ``path`` (CG-SL-Att, or
    SL-Att for the attention at the start of CG-SL-Att's training)."""
    grounder = Grounder.from_checkpoint(path)
    model = grounder.model.eval()
    dataset = VIDDataset(data, data, "VID", "test", grounder.corpus, image_size=grounder.geometry.image_size,
                         num_frames=EVAL_FRAMES, max_query_len=grounder.max_query_len)
    half = EVAL_FRAMES // 2
    chosen, seen = [], set()
    for i, (v, t) in enumerate(dataset.samples):
        centre = dataset.videos[v][t][0]
        if half <= t < len(dataset.videos[v]) - half and centre not in seen:
            seen.add(centre)
            chosen.append(i)
    if max_windows:  # evenly over the test videos
        chosen = chosen[:: max(1, len(chosen) // max_windows)][:max_windows]
    found: dict[str, list[tuple]] = defaultdict(list)
    loader = DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for batch in loader:
            for scale, weights in enumerate(window_attention(model, batch["images"].to(grounder.device))):
                entropy, peak = attention_stats(weights)
                found[f"scale {scale} ({weights.shape[-1]} keys)"] += zip(batch["image_path"], entropy.tolist(),
                                                                          peak.tolist())
    return found


def summarise(runs: dict[str, list[dict[str, list[tuple]]]], degradations: dict[str, tuple[str, ...]] | None
              ) -> dict[str, dict]:
    """label -> scale -> frame group -> entropy / peak: mean over checkpoints (and the std over them) of each
    checkpoint's window mean."""
    out: dict[str, dict] = {}
    for label, checkpoints in runs.items():
        out[label] = {}
        for scale in checkpoints[0]:
            out[label][scale] = {}
            group_names = ["all", *((CLEAN, HARD) if degradations is not None else ())]
            for group in group_names:
                values = []
                for found in checkpoints:
                    rows = [r for r in found[scale] if group == "all"
                            or (group == CLEAN) == (not degradations[r[0]])]
                    if rows:
                        values.append((np.mean([r[1] for r in rows]), np.mean([r[2] for r in rows]), len(rows)))
                if len(values) < len(checkpoints):  # no window of this group
                    continue
                values = np.array(values)
                out[label][scale][group] = {
                    "windows": int(values[0, 2]), "entropy": float(values[:, 0].mean()),
                    "entropy_std": float(values[:, 0].std(ddof=1)) if len(values) > 1 else 0.0,
                    "peak": float(values[:, 1].mean()),
                    "peak_std": float(values[:, 1].std(ddof=1)) if len(values) > 1 else 0.0,
                    "checkpoints": len(values)}
    return out


def table(summary: dict[str, dict]) -> Table:
    rows = []
    for label, scales in summary.items():
        for scale, group_stats in scales.items():
            keys = int(scale.split("(")[1].split()[0])
            for group, s in group_stats.items():
                rows.append([label, scale, group, str(s["windows"]), f"{s['entropy']:.3f} ± {s['entropy_std']:.3f}",
                             f"{s['peak']:.3f} ± {s['peak_std']:.3f}", f"{1 / keys:.3f}", str(s["checkpoints"])])
    return Table(["backbone", "scale", "centre frames", "windows", "normalised entropy", "peak weight",
                  "uniform peak", "checkpoints"], rows)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+",
                        help="LABEL=PATH of CG-SL-Att checkpoints (or SL-Att: the attention CG-SL-Att starts from)")
    parser.add_argument("--data", required=True, help="the synthetic set the checkpoints were trained on")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="windows per forward")
    parser.add_argument("--max_windows", type=positive_int, default=None,
                        help="measure at most this many windows, spread evenly over the test set")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) and OUT.json")
    args = parser.parse_args()
    data = Path(args.data)
    runs: dict[str, list] = defaultdict(list)
    for spec in args.checkpoints:
        label, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"checkpoint {spec!r}: expected LABEL=PATH")
        print(f"measuring {label}: {path}", flush=True)
        runs[label].append(measure(path, data, args.batch_size, args.max_windows))
    labels = data / "VID" / "degradations_test.json"
    summary = summarise(runs, load_degradations(labels) if labels.is_file() else None)
    text = markdown_table(table(summary))
    print(text)
    if args.out:
        atomic_write_text(text + "\n", args.out)
        atomic_write_text(json.dumps(summary, indent=1) + "\n", f"{args.out}.json")


if __name__ == "__main__":
    main()
