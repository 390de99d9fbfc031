"""Writing the set (frames, indexes, corpus, JSON ground truth, manifest), idempotently."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataset.common import default_corpus_path
from dataset.referit_loader import refer_index_path
from dataset.synthvid.clips import make_clip, split_tasks
from dataset.synthvid.config import SPLITS, SynthConfig
from dataset.synthvid.expressions import GRAMMAR_WORDS, KINDS, ClipObjects
from dataset.synthvid.hard import DEGRADATIONS
from dataset.vid_loader import video_index_path
from utils.io import UserInputError, atomic_save, atomic_write_text
from utils.word_utils import Corpus, build_corpus, save_corpus

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _frame_path(split: str, video: str, t: int) -> str:
    return f"frames/{split}/{video}/{t:06d}.JPEG"


def _xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    return [box[0], box[1], round(box[2] - box[0], 2), round(box[3] - box[1], 2)]


def degradations_path(root: str | os.PathLike, split: str) -> Path:
    """``VID/degradations_<split>.json``: frame path (as in the indexes) -> sorted degradation names."""
    return Path(root) / "VID" / f"degradations_{split}.json"


def _write_split(out: Path, split: str, results: list[tuple], image_stride: int, hard: bool) -> dict:
    """Write the split's JSON files, then the indexes built from what they say.

    Building the indexes from the parsed JSON makes their pickles independent of which process made
    each clip (pickle shares equal objects by identity), so they are byte-identical for any ``workers``.
    With ``hard`` (a hard-frame option on) the frames' degradation names are written too.
    """
    records, entries = [r for r, _, _ in results], [e for _, clip_entries, _ in results for e in clip_entries]
    entries_text = json.dumps(entries, indent=1) + "\n"
    records_text = json.dumps(records, separators=(",", ":")) + "\n"
    atomic_write_text(entries_text, out / "VID" / f"expressions_{split}.json")
    atomic_write_text(records_text, out / "VID" / f"objects_{split}.json")
    entries, records = json.loads(entries_text), json.loads(records_text)
    boxes = {r["video"]: [o["box"] for o in r["objects"]] for r in records}
    videos = [[(_frame_path(split, e["video"], t), list(boxes[e["video"]][e["target"]][t]), e["phrase"])
               for t in range(e["num_frames"])] for e in entries]
    images = [(path, "", _xyxy_to_xywh(box), phrase, entries[k]["types"])
              for k, video in enumerate(videos) for path, box, phrase in video[::image_stride]]
    atomic_save(videos, video_index_path(out, "VID", split))
    atomic_save(images, refer_index_path(out, "synthvid", split))
    counts = {"videos": len(records), "entries": len(entries), "image_items": len(images),
              "frames": [r["num_frames"] for r in records],
              "kinds": {k: sum(e["kind"] == k for e in entries) for k in KINDS}}
    if hard:
        labels = {_frame_path(split, r["video"], t): names
                  for r, (_, _, clip_labels) in zip(records, results) for t, names in enumerate(clip_labels)}
        atomic_write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n", degradations_path(out, split))
        counts["degraded_frames"] = {"any": sum(bool(names) for names in labels.values()),
                                     **{d: sum(d in names for names in labels.values()) for d in DEGRADATIONS}}
    return counts


def build_synthvid_corpus(train_phrases: Sequence[str]) -> Corpus:
    """Corpus of the training phrases, then the rest of the (closed) grammar's words (never <unk> later)."""
    return build_corpus([*train_phrases, *GRAMMAR_WORDS])


def _expected_files(manifest: dict[str, Any]) -> list[str]:
    """The set's files, relative to its root."""
    files = [default_corpus_path("", "VID").as_posix(), default_corpus_path("", "synthvid").as_posix()]
    for split in SPLITS:
        files += [video_index_path("", "VID", split).as_posix(), f"VID/expressions_{split}.json",
                  f"VID/objects_{split}.json", refer_index_path("", "synthvid", split).as_posix()]
        if "degraded_frames" in manifest["counts"][split]:
            files.append(degradations_path("", split).as_posix())
        for i, frames in enumerate(manifest["counts"][split]["frames"]):
            files += [_frame_path(split, f"vid_{i:05d}", t) for t in range(frames)]
    return files


def _is_complete(out: Path, config: SynthConfig, force: bool) -> bool:
    """True if ``out`` holds a complete set with these parameters; raise if it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserInputError(f"synthvid output {out} exists and is not a folder")
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            same = manifest.get("format_version") == FORMAT_VERSION and manifest.get("config") == config.as_json()
            missing = [f for f in _expected_files(manifest) if not (out / f).is_file()] if same else []
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserInputError(f"{manifest_path} is not a synthvid manifest ({err}); pass --force to "
                                 f"regenerate over it") from err
        if same and not missing:
            return True
        reason = (f"it is incomplete ({len(missing)} files missing, e.g. {missing[0]})" if same
                  else f"it was generated with other parameters ({manifest.get('config')})")
    else:
        if not any(out.iterdir()):
            return False
        reason = f"it is not empty and has no {MANIFEST} (foreign data or an interrupted run)"
    if force:
        return False
    raise UserInputError(f"synthvid output {out}: {reason}. Refusing to overwrite; pass --force to write the "
                         f"set over it (files of the set are replaced, other files are kept), or choose "
                         f"another --out")


def _quiet_worker() -> None:
    """A pool worker leaves Ctrl-C to the main process (which stops the pool) and dies quietly when stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def generate(out: str | os.PathLike, config: SynthConfig, force: bool = False, workers: int = 1) -> bool:
    """Write the set under ``out``; returns False (and writes nothing) if it is already there.

    Refuses (``UserInputError``) a non-empty ``out`` that is not this very set unless ``force``; with
    ``force`` the set's files are written over it and nothing else is deleted.
    """
    config.validate()
    out = Path(out)
    if _is_complete(out, config, force):
        return False
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    results = {}
    for split_index, split in enumerate(SPLITS):
        tasks = split_tasks(out, config, split_index)
        if workers > 1 and len(tasks) > 1:
            with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker) as pool:
                results[split] = pool.map(make_clip, tasks, chunksize=4)
        else:
            results[split] = [make_clip(task) for task in tasks]
    corpus = build_synthvid_corpus([e["phrase"] for _, entries, _ in results["train"] for e in entries])
    save_corpus(corpus, default_corpus_path(out, "VID"))
    save_corpus(corpus, default_corpus_path(out, "synthvid"))
    counts = {split: _write_split(out, split, results[split], config.image_stride, config.hard_frames.enabled)
              for split in SPLITS}
    manifest = {"format_version": FORMAT_VERSION, "generator": "dataset.synthvid", "config": config.as_json(),
                "counts": counts, "total_frames": sum(sum(c["frames"]) for c in counts.values()),
                "vocabulary": len(corpus)}
    atomic_write_text(json.dumps(manifest, indent=1) + "\n", out / MANIFEST)
    return True


def load_clips(root: str | os.PathLike, split: str) -> dict[str, ClipObjects]:
    """Ground truth of every clip of ``split`` from ``objects_<split>.json``, keyed by video name."""
    path = Path(root) / "VID" / f"objects_{split}.json"
    if not path.is_file():
        raise UserInputError(f"synthvid objects file not found: {path}")
    return {r["video"]: ClipObjects.from_record(r) for r in json.loads(path.read_text(encoding="utf-8"))}

