"""What a set of predictions says: accuracy at several IoU thresholds, breakdowns by expression type, object
size and degradation, temporal stability, paired comparisons of runs with clustered bootstrap intervals, and
the Markdown/HTML report of ``analyze.py`` (docs/analysis.md).

Prediction records (``--save_pred`` JSON Lines: image, phrase, pred, gt, iou) are matched to the entries of the
index they came from by (image, lower-cased phrase), which gives each frame its video entry, its position in it
(video-level indexes), its expression types, its object size and its degradations.
"""
from __future__ import annotations

import html
import json
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from app.predictions import draw_record
from dataset.common import image_size, load_index
from dataset.names import VIDEO_DATASETS
from dataset.referit_loader import IMAGE_DIRS, XYWH_DATASETS, corner_box, refer_index_path, unpack_item
from dataset.vid_loader import video_index_path
from utils.bootstrap import cluster_bootstrap
from utils.box_ops import box_iou
from utils.io import UserInputError, atomic_write_text, publish_folder, staging_folder

THRESHOLDS = (0.3, 0.5, 0.7)
HIT_IOU = 0.5  # the accuracy of the papers and of the project's scripts
STABLE_IOU = 0.5  # consecutive predictions "agree" above this IoU
# object size = box area / image area: COCO's 32^2 and 96^2 px limits in a 640x480 image are 0.3% and 3%; the
# synthetic set's objects are larger relative to its small frames, so the limits are set at 2% and 6%
SIZE_LIMITS = {"small": 0.02, "medium": 0.06}
SIZES = ("small", "medium", "large")
CLEAN, HARD = "clean", "hard (any)"


@dataclass
class Frame:
    """One scored prediction and what the index says about its frame."""
    image: str
    phrase: str
    pred: list[float]
    gt: list[float]
    iou: float
    entry: int  # video entry (video-level index) or item (image-level index)
    clip: str  # resampling cluster of the bootstrap: the video's folder, or the image for still images
    position: int  # frame number within its video entry; -1 without temporal order
    types: tuple[str, ...] = ()
    size: str | None = None
    degradations: tuple[str, ...] | None = None


@dataclass
class IndexInfo:
    """Per (image, lower-cased phrase): one tuple (entry, clip, position, types, size, degradations) per
    occurrence in the index, in index order."""
    path: Path
    temporal: bool
    image_root: Path
    frames: dict[tuple[str, str], list[tuple]] = field(default_factory=dict)
    has_types: bool = False
    has_sizes: bool = False
    has_degradations: bool = False


def size_class(box: Sequence[float], h: int, w: int) -> str:
    """``small`` / ``medium`` / ``large`` by box area relative to the image area (:data:`SIZE_LIMITS`)."""
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0) / float(h * w)
    return next((name for name, limit in SIZE_LIMITS.items() if area < limit), "large")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"{what} {path} cannot be read as JSON: {err}") from None


def load_degradations(path: Path) -> dict[str, tuple[str, ...]]:
    """``VID/degradations_<split>.json``: image path -> its sorted degradation names (``[]`` clean)."""
    data = _read_json(path, "degradations file")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise UserInputError(f"degradations file {path} must map image paths to lists of degradation names")
    return {k: tuple(v) for k, v in data.items()}


def _size_of(root: Path, image: str, box: Sequence[float], index_path: Path,
             cache: dict[str, tuple[int, int] | None]) -> str | None:
    if image not in cache:
        path = root / image
        cache[image] = image_size(path, index_path) if path.is_file() else None
    hw = cache[image]
    return None if hw is None else size_class(box, *hw)


def load_index_info(split_root: Path, data_root: Path, dataset: str, split: str,
                    degradations: Path | None = None) -> IndexInfo:
    """Read the index of ``dataset``/``split`` (video-level for VID/LiOTB, image-level otherwise), the expression
    types (``VID/expressions_<split>.json`` for a video index that has one; the item's last field for synthvid
    images), object sizes (when the images are under ``data_root``) and ``degradations`` when given."""
    video = dataset in VIDEO_DATASETS
    path = video_index_path(split_root, dataset, split) if video else refer_index_path(split_root, dataset, split)
    index = load_index(path, split)
    root = data_root if video else data_root / IMAGE_DIRS[dataset]
    degraded = load_degradations(degradations) if degradations is not None else None
    info = IndexInfo(path=path, temporal=video, image_root=root, has_degradations=degraded is not None)
    sizes: dict[str, tuple[int, int] | None] = {}
    if video:
        expressions_path = split_root / dataset / f"expressions_{split}.json"
        expressions = _read_json(expressions_path, "expressions file") if expressions_path.is_file() else None
        if expressions is not None and len(expressions) != len(index):
            raise UserInputError(f"expressions file {expressions_path} has {len(expressions)} entries, its index "
                                 f"{path} {len(index)} videos")
        info.has_types = expressions is not None
        rows = [(v, t, image, box, phrase, tuple(expressions[v]["types"]) if expressions else ())
                for v, entry in enumerate(index) for t, (image, box, phrase) in enumerate(entry)]
    else:
        info.has_types = dataset == "synthvid"
        rows = []
        for i, item in enumerate(index):
            image, box, phrase = unpack_item(item, i, path)
            types = tuple(item[4]) if info.has_types and len(item) == 5 else ()
            rows.append((i, -1, image, corner_box(box, dataset in XYWH_DATASETS).tolist(), phrase, types))
    for entry, position, image, box, phrase, types in rows:
        size = _size_of(root, image, box, path, sizes)
        info.has_sizes |= size is not None
        clip = str(Path(image).parent) if video or dataset == "synthvid" else image
        marks = None if degraded is None else degraded.get(image)
        if degraded is not None and marks is None:
            raise UserInputError(f"degradations file {degradations} has no entry for {image} (listed in {path})")
        info.frames.setdefault((image, phrase.lower()), []).append(
            (entry, clip, position, types, size, marks))
    return info


def attach(records: Iterable[dict[str, Any]], info: IndexInfo, source: str) -> list[Frame]:
    """The records of one prediction file as :class:`Frame` s; a record whose (image, phrase) the index does not
    hold is an error naming ``source``. Records of an (image, phrase) listed twice take its occurrences in order."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    frames = []
    for n, r in enumerate(records, 1):
        key = (r["image"], r["phrase"].lower())
        occurrences = info.frames.get(key, [])
        if seen[key] >= len(occurrences):
            raise UserInputError(f"{source} line {n}: image {r['image']!r} with phrase {r['phrase']!r} is not in "
                                 f"index file {info.path} (or more often than there)")
        entry, clip, position, types, size, marks = occurrences[seen[key]]
        seen[key] += 1
        frames.append(Frame(r["image"], r["phrase"], r["pred"], r["gt"], float(r["iou"]), entry, clip, position,
                            types, size, marks))
    return frames


def read_run(path: str | os.PathLike, info: IndexInfo) -> list[Frame]:
    """A ``--save_pred`` file matched to its index (an unreadable or malformed file is an error naming it)."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict) or not {"image", "phrase", "pred", "gt", "iou"} <= set(record):
                        raise UserInputError(f"predictions file {path} line {n}: expected a JSON object with "
                                             "image, phrase, pred, gt and iou")
                    records.append(record)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"predictions file {path} cannot be read as JSON Lines: {err}") from None
    if not records:
        raise UserInputError(f"predictions file {path} holds no records")
    return attach(records, info, f"predictions file {path}")


def stability(frames: Sequence[Frame]) -> float:
    """Fraction of consecutive frames of a video entry whose predicted boxes overlap with IoU > 0.5 (NaN when
    there are no consecutive frames, e.g. an image-level index)."""
    by_entry: dict[int, dict[int, Frame]] = defaultdict(dict)
    for f in frames:
        if f.position >= 0:
            by_entry[f.entry][f.position] = f
    pairs = [(seq[t].pred, seq[t + 1].pred) for seq in by_entry.values() for t in seq if t + 1 in seq]
    if not pairs:
        return math.nan
    first, second = (torch.tensor([p[i] for p in pairs], dtype=torch.float64) for i in (0, 1))  # (P, 4)
    return float((box_iou(first, second) > STABLE_IOU).double().mean())


def summary(frames: Sequence[Frame]) -> dict[str, float]:
    """count, accuracy at each of :data:`THRESHOLDS` (``acc@0.5`` ...), mean IoU and temporal stability."""
    ious = np.array([f.iou for f in frames], dtype=np.float64)
    out = {"count": len(frames)}
    out.update({f"acc@{t}": float((ious > t).mean()) if len(ious) else math.nan for t in THRESHOLDS})
    out["miou"] = float(ious.mean()) if len(ious) else math.nan
    out["stability"] = stability(frames)
    return out


def groups(frames: Sequence[Frame], by: str) -> dict[str, list[Frame]]:
    """Frames per expression type (``types``: an expression can have several), object size (``size``) or
    degradation (``degradation``: each kind, ``clean`` and ``hard (any)``); empty groups are left out."""
    out: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        if by == "types":
            names: Iterable[str] = f.types
        elif by == "size":
            names = [f.size] if f.size else []
        elif by == "degradation":
            names = [] if f.degradations is None else [*f.degradations, HARD] if f.degradations else [CLEAN]
        else:
            raise ValueError(f"unknown grouping {by!r}")
        for name in names:
            out[name].append(f)
    order = {"size": SIZES, "degradation": (CLEAN, HARD)}.get(by, ())
    return {k: out[k] for k in sorted(out, key=lambda k: (k not in order, order.index(k) if k in order else 0, k))}


def hits(frames: Sequence[Frame], threshold: float = HIT_IOU) -> np.ndarray:
    return np.array([f.iou > threshold for f in frames], dtype=np.float64)


def pair(a: Sequence[Frame], b: Sequence[Frame]) -> tuple[list[Frame], list[Frame]]:
    """The frames both runs scored, matched by (image, phrase, occurrence), in ``a``'s order."""
    def keyed(frames: Sequence[Frame]) -> dict[tuple, Frame]:
        seen: dict[tuple, int] = defaultdict(int)
        out = {}
        for f in frames:
            key = (f.image, f.phrase.lower())
            out[(*key, seen[key])] = f
            seen[key] += 1
        return out
    ka, kb = keyed(a), keyed(b)
    common = [k for k in ka if k in kb]
    return [ka[k] for k in common], [kb[k] for k in common]


def paired_difference(a: Sequence[Frame], b: Sequence[Frame], seed: int = 0) -> dict[str, float]:
    """Accuracy (IoU > 0.5) of ``b`` minus ``a`` on their common frames, with the 95% bootstrap interval that
    resamples clusters (videos, or images for still-image indexes) of frames."""
    a, b = pair(a, b)
    if not a:
        return {"count": 0, "diff": math.nan, "low": math.nan, "high": math.nan}
    diff, low, high = cluster_bootstrap(hits(b) - hits(a), [f.clip for f in a], seed=seed)
    return {"count": len(a), "clusters": len({f.clip for f in a}), "a": float(hits(a).mean()),
            "b": float(hits(b).mean()), "diff": diff, "low": low, "high": high}


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# -- the report: sections of paragraphs, tables and images, rendered as Markdown or HTML

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the report
    caption: str


Block = str | Table | Image


def summary_rows(runs: dict[str, Sequence[Frame]]) -> Table:
    header = ["run", "frames", *[f"acc@{t}" for t in THRESHOLDS], "mean IoU", "temporal stability"]
    rows = []
    for name, frames in runs.items():
        s = summary(frames)
        rows.append([name, str(s["count"]), *[fmt(s[f"acc@{t}"]) for t in THRESHOLDS], fmt(s["miou"]),
                     fmt(s["stability"])])
    return Table(header, rows)


def breakdown_table(runs: dict[str, Sequence[Frame]], by: str) -> Table | None:
    """Accuracy (IoU > 0.5) per group (rows) and run (columns), with the group's frame count."""
    per_run = {name: groups(frames, by) for name, frames in runs.items()}
    names = list(dict.fromkeys(g for run in per_run.values() for g in run))
    if not names:
        return None
    rows = []
    for g in names:
        counts = {len(run.get(g, [])) for run in per_run.values()}
        rows.append([g, "/".join(str(c) for c in sorted(counts)),
                     *[fmt(summary(run[g])["acc@0.5"]) if g in run else "n/a" for run in per_run.values()]])
    return Table([by if by != "types" else "expression type", "frames", *runs], rows)


def demo_table(runs: dict[str, Sequence[Frame]], types: Sequence[str]) -> Table:
    """The demo's table: accuracy, mean IoU, accuracy per expression type, on clean and hard frames (when the
    frames have degradation labels) and temporal stability per method."""
    labelled = any(f.degradations is not None for frames in runs.values() for f in frames)
    columns = [*types, *((CLEAN, HARD) if labelled else ())]
    rows = []
    for name, frames in runs.items():
        s, by = summary(frames), {**groups(frames, "types"), **groups(frames, "degradation")}
        rows.append([name, fmt(s["acc@0.5"]), fmt(s["miou"]),
                     *[fmt(summary(by[c])["acc@0.5"]) if c in by else "n/a" for c in columns], fmt(s["stability"])])
    return Table(["method", "accuracy", "mean IoU", *columns, "temporal stability"], rows)


def study_comparison(accuracy: dict[str, float], study: dict[str, Any], backbone: str) -> str:
    """How one run's accuracies compare with the spread of the multi-seed study of its backbone (the study's JSON
    summary)."""
    if study.get("backbone") != backbone:
        return (f"The seed study (docs/seed_study.md) used the {study.get('backbone')} backbone, this run the "
                f"{backbone} one: no comparison.")
    parts = []
    for method, value in accuracy.items():
        spread = study["methods"].get(method)
        if spread:
            mean, std = spread["accuracy"]["mean"], spread["accuracy"]["std"]
            parts.append(f"{method} {value:.3f} vs {mean:.3f} ± {std:.3f}")
    return (f"This run against the seed study ({len(study['seeds'])} training seeds, {backbone} backbone, accuracy "
            "mean ± std over seeds, docs/seed_study.md): " + "; ".join(parts) + ". One run on one machine: expect "
            "differences of the order of the std.")


def comparison_rows(runs: dict[str, Sequence[Frame]], seed: int = 0) -> Table:
    """Every later run against the first: the paired accuracy difference with its clustered 95% interval."""
    names = list(runs)
    rows = []
    for other in names[1:]:
        d = paired_difference(runs[names[0]], runs[other], seed=seed)
        rows.append([f"{other} - {names[0]}", str(d["count"]), str(d.get("clusters", 0)), fmt(d.get("a")),
                     fmt(d.get("b")), fmt(d["diff"]), f"[{fmt(d['low'])}, {fmt(d['high'])}]"])
    return Table(["difference", "frames", "clusters", "accuracy (first)", "accuracy (other)", "difference",
                  "95% interval"], rows)


def render_markdown(title: str, sections: Sequence[tuple[str, Sequence[Block]]]) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, Table):
                lines.append(markdown_table(block))
            elif isinstance(block, Image):
                lines.append(f"![{block.caption}]({block.path})")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_html(title: str, sections: Sequence[tuple[str, Sequence[Block]]]) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}img{max-width:100%}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{esc(heading)}</h2>")
        for block in blocks:
            if isinstance(block, Table):
                parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows]
                parts.append("</table>")
            elif isinstance(block, Image):
                parts.append(f"<figure><img src='{esc(block.path)}' alt='{esc(block.caption)}'>"
                             f"<figcaption>{esc(block.caption)}</figcaption></figure>")
            else:
                parts.append(f"<p>{esc(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def worst_frames(frames: Sequence[Frame], count: int) -> list[Frame]:
    return sorted(frames, key=lambda f: (f.iou, f.image, f.phrase))[:count]


def timelines(runs: dict[str, Sequence[Frame]], count: int) -> list[tuple[int, dict[str, list[tuple[int, float]]]]]:
    """The ``count`` video entries with the lowest mean IoU over the runs, each with its (position, IoU)
    series per run."""
    series: dict[int, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for name, frames in runs.items():
        for f in frames:
            if f.position >= 0:
                series[f.entry][name].append((f.position, f.iou))
    mean = {e: np.mean([iou for s in runs_.values() for _, iou in s]) for e, runs_ in series.items()}
    chosen = sorted(series, key=lambda e: (mean[e], e))[:count]
    return [(e, {name: sorted(s) for name, s in series[e].items()}) for e in chosen]


def plot_timelines(chosen: Sequence[tuple[int, dict[str, list[tuple[int, float]]]]], path: Path,
                   label: Callable[[int], str]) -> None:
    """One panel per video entry: IoU per frame, one line per run, the 0.5 line dashed (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False, sharey=True)
    for ax, (entry, series) in zip(axes.flat, chosen):
        for name, points in series.items():
            ax.plot([p for p, _ in points], [v for _, v in points], marker=".", label=name)
        ax.axhline(HIT_IOU, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_title(label(entry), fontsize=7)
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("frame")
    fig.supylabel("IoU")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _gallery(runs: dict[str, Sequence[Frame]], info: IndexInfo, folder: Path, link: str, count: int) -> list[Block]:
    """The ``count`` worst frames of each run drawn (prediction red, ground truth green) into ``folder``, linked
    as ``link/<file>``."""
    blocks: list[Block] = []
    for r, (name, frames) in enumerate(runs.items()):
        blocks.append(f"**{name}**: the {count} frames with the lowest IoU.")
        for k, f in enumerate(worst_frames(frames, count)):
            img = cv2.imread(str(info.image_root / f.image), cv2.IMREAD_COLOR)
            if img is None:
                return [f"No gallery: image {info.image_root / f.image} cannot be read (pass --data_root)."]
            target = folder / f"worst_{r}_{k:02d}.jpg"
            cv2.imwrite(str(target), draw_record(img, {"phrase": f.phrase, "pred": f.pred, "gt": f.gt, "iou": f.iou}))
            blocks.append(Image(f"{link}/{target.name}", f"{name}: {f.image} (IoU {f.iou:.2f})"))
    return blocks


def report_sections(runs: dict[str, Sequence[Frame]], info: IndexInfo, sources: dict[str, str], folder: Path,
                    link: str, gallery: int, timeline_count: int, plots: bool, seed: int = 0
                    ) -> list[tuple[str, list[Block]]]:
    """The report's sections; gallery images and timeline plots are written into ``folder``, which the report
    links as ``link``."""
    sections: list[tuple[str, list[Block]]] = [
        ("Runs", ["; ".join(f"**{n}**: {sources[n]}" for n in runs) + ".",
                  f"Index: {info.path}. A frame is a hit when its IoU with the ground truth is above the threshold; "
                  "accuracy without a threshold named is at IoU 0.5. Temporal stability: fraction of consecutive "
                  f"frames of a video entry whose predicted boxes overlap with IoU > {STABLE_IOU}."]),
        ("Accuracy", [summary_rows(runs)])]
    if info.has_types:
        sections.append(("By expression type", [breakdown_table(runs, "types"),
                                                "An expression can have several types, so the groups overlap."]))
    if info.has_sizes:
        sections.append(("By object size", [breakdown_table(runs, "size"),
                                            f"Box area / image area: small < {SIZE_LIMITS['small']:.0%}, medium < "
                                            f"{SIZE_LIMITS['medium']:.0%}, large otherwise."]))
    if info.has_degradations:
        sections.append(("By degradation", [breakdown_table(runs, "degradation"),
                                            "A frame can have several degradations; 'hard (any)' has at least one."]))
    if len(runs) > 1:
        unit = "video (the frames of one clip)" if info.temporal else "image"
        sections.append(("Paired comparison", [
            comparison_rows(runs, seed),
            f"Accuracy at IoU 0.5 on the frames both runs scored (matched by frame image and phrase). The 95% "
            f"interval is a percentile bootstrap that resamples whole clusters, one per {unit}, not single "
            "frames: frames of one clip are correlated."]))
    if info.temporal and timeline_count:
        chosen = timelines(runs, timeline_count)
        if not plots:
            sections.append(("IoU timelines", ["No plots: matplotlib is not installed "
                                               "(pip install matplotlib; it is in requirements-dev.txt)."]))
        elif chosen:
            plot_timelines(chosen, folder / "timelines.png", lambda e: f"entry {e}: {_entry_label(runs, e)}")
            sections.append(("IoU timelines", [
                f"The {len(chosen)} video entries with the lowest mean IoU; dashed: IoU 0.5.",
                Image(f"{link}/timelines.png", "IoU per frame")]))
    if gallery:
        sections.append(("Worst frames", _gallery(runs, info, folder, link, gallery)))
    return sections


def _entry_label(runs: dict[str, Sequence[Frame]], entry: int, width: int = 40) -> str:
    frame = next(f for frames in runs.values() for f in frames if f.entry == entry)
    return frame.phrase if len(frame.phrase) <= width else frame.phrase[: width - 3] + "..."


def write_report(runs: dict[str, Sequence[Frame]], info: IndexInfo, sources: dict[str, str], out: Path,
                 gallery: int, timeline_count: int, plots: bool, seed: int = 0) -> Path:
    """``out`` (.md or .html) and its images in the sibling folder ``<stem>_files``, each written aside and
    swapped in whole."""
    folder = out.with_name(f"{out.stem}_files")
    staged = staging_folder(folder)
    try:
        sections = report_sections(runs, info, sources, staged, folder.name, gallery, timeline_count, plots, seed)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    publish_folder(staged, folder)
    title = f"Grounding analysis: {', '.join(runs)}"
    text = render_html(title, sections) if out.suffix.lower() in (".html", ".htm") else render_markdown(title,
                                                                                                        sections)
    return atomic_write_text(text, out)
