"""The cache of top-k predictions (docs/behaviour.md §8): its file format, the writer, the manifest, and the
reader that re-scores each frame over its window.

A cache file holds, for one test frame, its ``K`` most confident boxes (original pixels), their
confidences and the ``E``-d co-grounded feature at each box's cell, in the reference layout::

    <cache_dir>/<video_dir>/<frame_stem>_<global index>.pth =
        {'pred_bbox_topk': (K, 1, 4), 'pred_score_topk': list of K floats, 'visu_feat': (K, 1, E)}

The global index runs over all test frames of all videos in order. Post-processing re-scores the
centre frame's candidates by how well they match the candidates of the other frames of its window
(:func:`utils.postprocess.rescore_window`, the paper's algorithm).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import numbers
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from app.records import Pick
from app.stream import SlidingWindow
from utils.distributed import all_gather_objects, barrier
from utils.geometry import Geometry, decode_topk
from utils.io import (
    UserInputError,
    atomic_save,
    atomic_write_text,
    file_sha256,
    numpy_scalar_globals,
    publish_folder,
    safe_load,
    staging_folder,
)
from utils.letterbox import boxes_to_original
from utils.postprocess import rescore_window
from utils.progress import progress_bar
from utils.windows import EVAL_FRAMES, window_sources

logger = logging.getLogger(__name__)

CACHE_TOPK = 5  # candidates per cache file (docs/behaviour.md §8; the reference ties k to the window length)
CACHE_LAYOUT = "<cache_dir>/<video_dir>/<frame_stem>_<global frame index>.pth"
CACHE_KEYS = ("pred_bbox_topk", "pred_score_topk", "visu_feat")
MAX_LISTED_MISSING = 5
FRAMES_PER_CHUNK = 256  # frames re-scored at once: bounds the (F, T, K, E) window tensor
MANIFEST = ".cache_manifest.json"  # written last by the run that wrote the folder
MTIME_SLACK_S = 2.0  # file-system timestamps vs time.time()


def default_cache_dir(args: argparse.Namespace) -> Path:
    """``--cache_dir``, or ``cache/<savename>``."""
    return Path(args.cache_dir) if args.cache_dir else Path("cache") / args.savename


# ---------------------------------------------------------------------------------------------- file format

class CacheEntry(NamedTuple):
    """One frame's cache file as tensors."""

    boxes: Tensor  # (K, 4) xyxy, original pixels
    scores: Tensor  # (K,) float32
    feats: Tensor  # (K, E) float32


def cache_file_path(cache_dir: str | os.PathLike, image_path: str | os.PathLike, global_index: int) -> Path:
    """``<cache_dir>/<parent folder of image_path>/<image stem>_<global_index>.pth``."""
    image_path = Path(image_path)
    return Path(cache_dir) / image_path.parent.name / f"{image_path.stem}_{global_index}.pth"


def save_cache_entry(path: str | os.PathLike, boxes: Tensor, scores: Tensor, feats: Tensor) -> Path:
    """Write boxes (K, 4), scores (K,) and feats (K, E) in the reference layout, atomically."""
    k = boxes.shape[0]
    if boxes.shape != (k, 4) or scores.shape != (k,) or feats.dim() != 2 or feats.shape[0] != k:
        raise ValueError(f"expected boxes (K, 4), scores (K,), feats (K, E); got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}, {tuple(feats.shape)}")
    entry = {
        "pred_bbox_topk": boxes.detach().to("cpu", torch.float32).reshape(k, 1, 4).clone(),
        "pred_score_topk": [float(s) for s in scores.detach().cpu().float().tolist()],
        "visu_feat": feats.detach().to("cpu", torch.float32).reshape(k, 1, -1).clone(),
    }
    return atomic_save(entry, path)


def _bad_entry(path: Path, key: str, expected: str, got: str) -> UserInputError:
    return UserInputError(f"cache file {path}: '{key}' should be {expected}, got {got}")


def load_cache_entry(path: str | os.PathLike) -> CacheEntry:
    """Read and validate one cache file (weights-only unpickling; numpy float32 scalars allowed)."""
    path = Path(path)
    entry = safe_load(path, what="cache file", allowed_globals=numpy_scalar_globals(np.float32))
    if not isinstance(entry, dict):
        raise UserInputError(f"cache file {path}: expected a dict with keys {list(CACHE_KEYS)}, "
                             f"got {type(entry).__name__}")
    for key in CACHE_KEYS:
        if key not in entry:
            raise UserInputError(f"cache file {path} has no key '{key}' (expected keys {list(CACHE_KEYS)})")
    boxes, feats, scores = entry["pred_bbox_topk"], entry["visu_feat"], entry["pred_score_topk"]
    if not isinstance(boxes, Tensor) or boxes.dim() != 3 or boxes.shape[0] < 1 or boxes.shape[1:] != (1, 4):
        raise _bad_entry(path, "pred_bbox_topk", "a (K, 1, 4) tensor", _describe(boxes))
    k = boxes.shape[0]
    if not isinstance(feats, Tensor) or feats.dim() != 3 or feats.shape[:2] != (k, 1):
        raise _bad_entry(path, "visu_feat", f"a ({k}, 1, E) tensor", _describe(feats))
    if isinstance(scores, Tensor):
        scores = scores.flatten().tolist()
    if not isinstance(scores, (list, tuple)) or len(scores) != k or not all(_is_real(s) for s in scores):
        raise _bad_entry(path, "pred_score_topk", f"a list of {k} numbers", _describe(scores))
    if boxes.is_complex() or feats.is_complex():
        raise _bad_entry(path, "pred_bbox_topk" if boxes.is_complex() else "visu_feat", "a real tensor",
                         "a complex one")
    entry = CacheEntry(
        boxes=boxes[:, 0].float(),
        scores=torch.tensor([float(s) for s in scores], dtype=torch.float32),
        feats=feats[:, 0].float(),
    )
    for key, values in zip(CACHE_KEYS, (entry.boxes, entry.scores, entry.feats)):
        if not torch.isfinite(values).all():
            raise UserInputError(f"cache file {path}: '{key}' holds NaN or infinite values (a diverged model, or a "
                                 "damaged file): write the cache again")
    return entry


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------- writer

def topk_candidates(outputs: dict, meta: dict[str, Any], geometry: Geometry, k: int = CACHE_TOPK
                    ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The ``k`` most confident boxes of each row (B, K, 4) in original pixels, their confidences (B, K), and the
    co-grounded feature at each box's cell (B, K, E), None for the image model (docs/behaviour.md §8)."""
    decoded = decode_topk(outputs["pred_anchor"], geometry.image_size, geometry.anchors, geometry.anchor_imsize, k=k)
    boxes = boxes_to_original(decoded.boxes, *meta["letterbox"].params(decoded.boxes.device))  # (B, K, 4)
    if "corr_feat" not in outputs:
        return boxes, decoded.scores, None
    feats = torch.cat([f.flatten(2) for f in outputs["corr_feat"]], dim=2).transpose(1, 2)  # (B, N, E)
    feats = feats.gather(1, decoded.cell[..., None].expand(-1, -1, feats.shape[2]))  # (B, K, E)
    return boxes, decoded.scores, feats


def write_cache(
    outputs: dict, meta: dict[str, Any], geometry: Geometry, cache_dir: Path, k: int = CACHE_TOPK
) -> None:
    """One cache file per grounded frame (docs/behaviour.md §8): its top-k boxes in original pixels, their
    confidences and co-grounded features."""
    boxes, scores, feats = (t.cpu() for t in topk_candidates(outputs, meta, geometry, k))  # one copy per batch
    for b in range(boxes.shape[0]):
        path = cache_file_path(cache_dir, meta["image_path"][b], int(meta["index"][b]))
        save_cache_entry(path, boxes[b], scores[b], feats[b])


# ------------------------------------------------------------------------------------------------- manifest

def _check_cache_dir(cache_dir: Path) -> None:
    if not cache_dir.is_dir():
        raise UserInputError(f"cache folder {cache_dir} not found: expected the files written by --cache, "
                             f"laid out as {CACHE_LAYOUT}")
    if next(cache_dir.glob("*/*.pth"), None) is None:
        raise UserInputError(f"cache folder {cache_dir} holds no cache files: expected {CACHE_LAYOUT} "
                             f"(written by --cache)")


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/*.pth"))


def _names_digest(cache_dir: Path, files: list[Path]) -> str:
    names = "\n".join(p.relative_to(cache_dir).as_posix() for p in files)
    return hashlib.sha256(names.encode()).hexdigest()


# what a cache is computed from, recorded in its manifest and compared by post-processing (the checkpoint's hash
# is recorded only: post-processing does not know the checkpoint)
COMPARED_SOURCE = {"dataset": "--dataset", "split": "--test_split", "index_sha256": "index file", "size": "--size"}


def cache_source(dataset: str, split: str, index_path: str | os.PathLike, size: int,
                 checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a cache of ``split`` is (or must be) computed from: dataset, split, the index file's SHA-256, the
    input size and, for the writer, the checkpoint's SHA-256."""
    source = {"dataset": dataset, "split": split, "index_sha256": file_sha256(index_path), "size": size}
    if checkpoint is not None:
        source["checkpoint_sha256"] = file_sha256(checkpoint)
    return source


def write_cache_manifest(cache_dir: str | os.PathLike, started: float, source: dict[str, Any]) -> Path:
    """Record that the cache files in ``cache_dir`` are one run's complete output (call it last).

    The manifest holds what the cache was computed from (``source``, :func:`cache_source`), the SHA-256 of each
    file's bytes and the run's time span; the cache files themselves keep the reference format.
    """
    cache_dir = Path(cache_dir)
    files = {p.relative_to(cache_dir).as_posix(): file_sha256(p) for p in _cache_files(cache_dir)}
    manifest = {"format": 2, "source": source, "files": files, "started": started, "finished": time.time()}
    return atomic_write_text(json.dumps(manifest) + "\n", cache_dir / MANIFEST)


@contextlib.contextmanager
def writing_cache(cache_dir: Path | None, source: dict[str, Any] | None,
                  is_main: bool = True) -> Iterator[Path | None]:
    """The folder to write the cache into (None without ``cache_dir``): a staging folder that the main process
    creates beside ``cache_dir`` and every process gets, swapped in whole with its manifest (``source``:
    :func:`cache_source`) once the block has completed on every process, removed on an error or Ctrl-C
    (docs/behaviour.md §8)."""
    started = time.time()
    staged = all_gather_objects([staging_folder(cache_dir) if is_main and cache_dir else None])[0]
    try:
        yield staged
        barrier()
        if cache_dir is not None and is_main:
            write_cache_manifest(staged, started, source or {})
            publish_folder(staged, cache_dir)
    except BaseException:
        if staged is not None and is_main:
            shutil.rmtree(staged, ignore_errors=True)
        raise


def _not_one_run(cache_dir: Path, detail: str) -> UserInputError:
    return UserInputError(f"cache folder {cache_dir} is not the output of one run ({detail}): refusing a folder "
                          "mixed from several runs or changed by hand; write the cache again with --cache --overwrite")


def _check_source(cache_dir: Path, recorded: dict[str, Any], expected: dict[str, Any], index: Path) -> None:
    """Refuse a cache written from another dataset, split, index file or input size than this run reads."""
    for key, flag in COMPARED_SOURCE.items():
        if recorded.get(key) == expected[key]:
            continue
        if key == "index_sha256":
            raise UserInputError(f"cache folder {cache_dir} was written from another index file than {index} (its "
                                 "content differs): post-process with the index the cache was written from, or "
                                 "write the cache again")
        raise UserInputError(f"cache folder {cache_dir} was written for {flag} {recorded.get(key)!r}, this run has "
                             f"{flag} {expected[key]!r}: post-process with the cache's {flag}, or write the cache "
                             "again")


def recorded_source(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """What the manifest of ``cache_dir`` records the cache was written from (dataset, split, index hash, size):
    empty for a cache without that record. A damaged manifest is reported by :func:`check_cache_manifest`."""
    try:
        manifest = json.loads((Path(cache_dir) / MANIFEST).read_text(encoding="utf-8"))
        return dict(manifest.get("source") or {})
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _read_cache_manifest(cache_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``cache_dir``; None (with a note in the log) where there is none, as in the authors'
    published caches, which are used as they are."""
    path = cache_dir / MANIFEST
    if not path.is_file():
        logger.info("note: cache folder %s has no %s (e.g. the authors' published cache): it is used as it is, "
                    "without checking that one run wrote all of it", cache_dir, MANIFEST)
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(manifest.get("files"), dict):
            return {"files": {str(k): str(v) for k, v in manifest["files"].items()},
                    "source": dict(manifest["source"])}
        return {"count": int(manifest["files"]), "names_sha256": str(manifest["names_sha256"]),
                "started": float(manifest["started"]), "finished": float(manifest["finished"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise UserInputError(f"cache manifest {path} is damaged ({type(err).__name__}): write the cache again "
                             "with --cache --overwrite") from None


def _check_cache_files(cache_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a cache folder whose files are not exactly those its run wrote, byte for byte."""
    if "files" not in manifest:
        _check_names_and_times(cache_dir, manifest)
        return
    hashes = manifest["files"]
    files = {p.relative_to(cache_dir).as_posix(): p for p in _cache_files(cache_dir)}
    if files.keys() != hashes.keys():
        extra, missing = sorted(files.keys() - hashes.keys()), sorted(hashes.keys() - files.keys())
        raise _not_one_run(cache_dir, f"{cache_dir / extra[0]} was not written by that run" if extra
                           else f"{cache_dir / missing[0]}, written by that run, is missing")
    changed = [path for name, path in files.items() if file_sha256(path) != hashes[name]]
    if changed:
        raise _not_one_run(cache_dir, f"{changed[0]} is not the file that run wrote: its content differs"
                           + (f", and {len(changed) - 1} more" if len(changed) > 1 else ""))


def check_cache_manifest(cache_dir: str | os.PathLike, expected: dict[str, Any] | None = None,
                         index: str | os.PathLike | None = None, needed: list[Path] | None = None) -> bool:
    """Refuse a cache folder that (``expected``: :func:`cache_source` of this run, without the checkpoint;
    ``index``: its index file, named in the message) was written from another dataset, split, index or input
    size, that lacks a file of ``needed``, or whose files are not exactly those one run wrote, byte for byte,
    in that order. False where there is no manifest. A manifest of the older form (no content hashes) gets the
    checks it allows, and a note.
    """
    cache_dir = Path(cache_dir)
    manifest = _read_cache_manifest(cache_dir)
    if manifest is not None and expected is not None and "source" in manifest:
        _check_source(cache_dir, manifest["source"], expected, Path(index or "?"))
    _check_complete(cache_dir, needed or [])
    if manifest is None:
        return False
    _check_cache_files(cache_dir, manifest)
    return True


def _check_names_and_times(cache_dir: Path, manifest: dict[str, Any]) -> None:
    """A manifest of the older form (file count, names digest, time span): the checks it allows, and a note."""
    count, started, finished = manifest["count"], manifest["started"], manifest["finished"]
    files = _cache_files(cache_dir)
    foreign = [p for p in files if not started - MTIME_SLACK_S <= p.stat().st_mtime <= finished + MTIME_SLACK_S]
    if len(files) != count or _names_digest(cache_dir, files) != manifest["names_sha256"] or foreign:
        raise _not_one_run(cache_dir, f"{len(foreign)} files written outside that run, e.g. {foreign[0]}" if foreign
                           else f"it holds {len(files)} cache files where that run wrote {count}"
                           if len(files) != count else "its file names differ from those that run wrote")
    logger.info("note: the manifest of cache folder %s records no content hashes (an older version wrote it): "
                "its files are checked by name and time only", cache_dir)


# ----------------------------------------------------------------------------------------- reader, re-scorer

class VideoRescorer:
    """§8 re-scoring of one video whose candidates arrive in frame order (from cache files or in memory).

    ``push`` the next frames' :class:`CacheEntry` (stacked: boxes (m, K, 4), scores (m, K), feats (m, K, E)); it
    returns the :class:`app.records.Pick` of each frame whose window is now complete (frame index in the video);
    :meth:`finish` ends the video and returns the rest. Only the frames a window can still use are kept, and
    centres are re-scored ``frames_per_chunk`` at a time.
    """

    def __init__(self, num_frames: int = EVAL_FRAMES, frames_per_chunk: int = FRAMES_PER_CHUNK) -> None:
        self.num_frames, self.frames_per_chunk = num_frames, frames_per_chunk
        self.window = SlidingWindow(num_frames)
        self.kept: CacheEntry | None = None
        self.offset = 0  # video index of kept's first frame

    def push(self, entry: CacheEntry) -> list[Pick]:
        self.kept = entry if self.kept is None else CacheEntry(*(torch.cat(p) for p in zip(self.kept, entry)))
        return self._rescore(self.window.complete(self.offset + len(self.kept.feats)), None)

    def finish(self) -> list[Pick]:
        if self.kept is None:
            return []
        end = self.offset + len(self.kept.feats)
        return self._rescore(self.window.complete(end, ended=True), end)

    def _rescore(self, centres: range, length: int | None) -> list[Pick]:
        """Picks of ``centres``; positions at or past ``length`` (if known) are invalid."""
        picks = []
        end = self.offset + len(self.kept.feats)
        for first in range(centres.start, centres.stop, self.frames_per_chunk):
            last = min(first + self.frames_per_chunk, centres.stop)
            sources, valid = window_sources(length if length is not None else end, self.num_frames, first)
            sources, valid = sources[: last - first] - self.offset, valid[: last - first]  # (F, T)
            rows = torch.arange(first, last) - self.offset
            best, _ = rescore_window(
                self.kept.feats[rows],  # (F, K, E)
                self.kept.feats[sources],  # (F, T, K, E)
                self.kept.scores[sources],  # (F, T, K)
                valid,
            )
            boxes = self.kept.boxes[rows, best]  # (F, 4)
            picks += [Pick(int(t), int(b), box) for t, b, box in zip(range(first, last), best, boxes)]
        drop = max(0, self.window.first_needed - self.offset)
        if drop:
            self.kept = CacheEntry(*(p[drop:] for p in self.kept))
            self.offset += drop
        return picks


def _check_complete(cache_dir: Path, paths: list[Path]) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing[:MAX_LISTED_MISSING])
        more = f" and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise UserInputError(
            f"incomplete cache {cache_dir}: {len(missing)} of {len(paths)} frame files are missing "
            f"(every frame's file is needed, as a centre and as its neighbours' window): {listed}{more}"
        )


def _load_video(paths: list[Path]) -> CacheEntry:
    """Stack the entries of one video's frames: boxes (n, K, 4), scores (n, K), feats (n, K, E)."""
    entries = [load_cache_entry(p) for p in paths]
    first = entries[0]
    for path, entry in zip(paths, entries):
        if entry.feats.shape != first.feats.shape:
            raise UserInputError(
                f"cache file {path}: 'visu_feat' has K, E = {tuple(entry.feats.shape)} but {paths[0]} of the "
                f"same video has {tuple(first.feats.shape)}; all frames of a video need the same K and E"
            )
    return CacheEntry(*(torch.stack(parts) for parts in zip(*entries)))


def post_process(
    videos: list[list[str]],
    cache_dir: str | os.PathLike,
    num_frames: int = EVAL_FRAMES,
    progress: bool = True,
    frames_per_chunk: int = FRAMES_PER_CHUNK,
    source: dict[str, Any] | None = None,
    index: str | os.PathLike | None = None,
) -> list[Pick]:
    """Re-score every test frame from the cache (docs/behaviour.md §8), streaming video by video.

    ``videos``: image paths per video, in order (the same order as when the cache was written). At most
    ``frames_per_chunk`` frames are re-scored at once (it bounds the (F, T, K, E) window tensor).
    Returns one :class:`app.records.Pick` per frame in global order (``frame``: the global frame index).
    ``source``: what the cache must have been written from (:func:`cache_source`; ``index``: that index file).
    """
    if num_frames < 1 or frames_per_chunk < 1:
        raise ValueError(f"num_frames and frames_per_chunk must be >= 1, got {num_frames}, {frames_per_chunk}")
    cache_dir = Path(cache_dir)
    _check_cache_dir(cache_dir)
    offsets = np.cumsum([0] + [len(v) for v in videos]).tolist()
    paths = [[cache_file_path(cache_dir, image, start + t) for t, image in enumerate(video)]
             for video, start in zip(videos, offsets)]
    check_cache_manifest(cache_dir, source, index, [p for video in paths for p in video])

    picks: list[Pick] = []
    with progress_bar(total=offsets[-1], enabled=progress, desc="post-processing", unit="frame") as bar:
        for video_paths, start in zip(paths, offsets):
            if not video_paths:
                continue
            rescorer = VideoRescorer(num_frames, frames_per_chunk)
            video_picks = rescorer.push(_load_video(video_paths)) + rescorer.finish()  # each file read once
            picks += [pick._replace(frame=start + pick.frame) for pick in video_picks]
            bar.update(len(video_picks))
    return picks
