"""Build the VID-Sentence index files (docs/behaviour.md §1) from the public annotations.

One index "video" per (tube, sentence) pair: the annotated frames of the tube in frame order, each
``(image_path, [x1, y1, x2, y2], sentence)``. A tube with several sentences gives several videos; a
listed tube without a sentence gives none. If a track skips frames (the sample test tubes do), its
video holds only the annotated frames, still in order.

Also holds :func:`resolve_corpus` and :func:`write_outputs`, which ``tools/build_refcoco.py`` reuses.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.checks import FOLDER, check_output
from dataset.common import check_boxes, check_image_paths, check_phrases
from utils.cli import ArgumentParser, keeps, run_main
from utils.io import FILE, UserInputError, atomic_save, check_paths, lock_outputs, read_text, safe_load
from utils.word_utils import Corpus, Dictionary, build_corpus, load_corpus, split_words

# VID-Sentence split -> ImageNet-VID folder of its tube files and frames (test tubes are VID "val" videos).
SPLIT_DIRS = {"train": "train", "test": "val"}
MISSING_SHOWN = 5

LAYOUT = """\
expected layout (VID-Sentence = github.com/zfchenUnique/VID-Sentence, frames = ImageNet VID, ILSVRC2015):

  <vid_sentence_root>/
    Data/VID/annSamples/train_valid_list.txt    lines "<video>,<track id>", e.g.
                                                "ILSVRC2015_VID_train_0003/ILSVRC2015_train_01073002,0"
    Data/VID/annSamples/train_ann_list_v2.txt   lines "<id>, <sentence>", <id> = 0-based line in valid list
    Data/VID/annSamples/test_valid_list.txt     lines "ILSVRC2015_val_00118001,1"
    Data/VID/annSamples/test_ann_list_v2.txt
    Annotations/VID/tubeGt/train/<video>.js     {"video", "annotations": [{"id": "<track id>",
    Annotations/VID/tubeGt/val/<video>.js         "track": [{"frame": 1-based, "bbox": [x1,y1,x2,y2], ...}]}]}
  <vid_frames_root>/                            (ILSVRC2015/Data/VID)
    train/<video>/000000.JPEG ...               frame f of a track is <video>/%06d.JPEG of f - 1
    val/<video>/000000.JPEG ...                 (test split)

writes <out>/VID_video_level_train.pth, <out>/VID_video_level_test.pth and <out>/corpus.pth.
Image paths are stored as <vid_frames_root>/<split dir>/<video>/%06d.JPEG: give a root relative to the
folder you will train from (or an absolute one). Run from the repository root.
"""


@dataclass
class SplitIndex:
    """The videos of one split and the counts the tool reports."""

    videos: list[list[tuple[str, list[float], str]]]
    sentences: list[str]
    listed_tubes: int
    used_tubes: int

    @property
    def num_frames(self) -> int:
        return sum(len(video) for video in self.videos)

    def frame_paths(self) -> set[str]:
        return {frame[0] for video in self.videos for frame in video}


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines of ``path`` with their 1-based line numbers."""
    text = read_text(path, what)
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_valid_list(path: Path) -> list[tuple[str, str]]:
    """``(video, track id)`` per line of a ``*_valid_list.txt``; the list position is the tube id."""
    tubes = []
    for number, line in _lines(path, "tube list"):
        video, sep, track = (part.strip() for part in line.partition(","))
        if not sep or not video or not track.isdigit():
            raise UserInputError(f"{path} line {number}: expected '<video>,<track id>', got {line!r}")
        tubes.append((video, track))
    return tubes


def read_ann_list(path: Path, num_tubes: int) -> list[tuple[int, str]]:
    """``(tube id, sentence)`` per line of a ``*_ann_list_v2.txt``; ids index the matching valid list."""
    sentences = []
    for number, line in _lines(path, "sentence list"):
        tube_id, sep, sentence = (part.strip() for part in line.partition(","))
        if not sep or not tube_id.isdigit() or not sentence:
            raise UserInputError(f"{path} line {number}: expected '<tube id>, <sentence>', got {line!r}")
        if int(tube_id) >= num_tubes:
            raise UserInputError(
                f"{path} line {number}: tube id {tube_id} is past the end of the tube list ({num_tubes})"
            )
        sentences.append((int(tube_id), sentence))
    return sentences


def is_coordinate(value: Any) -> bool:
    """A finite int or float (JSON allows NaN and Infinity, which are no coordinates)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_tube_file(path: Path, video: str) -> dict[str, list[tuple[int, list[float]]]]:
    """Track id -> ``[(frame, [x1, y1, x2, y2])]`` sorted by frame (1-based) from a ``tubeGt`` file."""
    if not path.exists():
        raise UserInputError(f"tube file not found: {path} (needed for video {video})")
    try:
        data = json.loads(read_text(path, "tube file"))
    except json.JSONDecodeError as err:
        raise UserInputError(f"tube file {path} is not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise UserInputError(f"tube file {path}: expected an object with an 'annotations' list")
    name = Path(video).name
    if data.get("video", name) != name:
        raise UserInputError(f"tube file {path} describes video {data['video']!r}, expected {name!r}")
    tracks = {}
    for i, annotation in enumerate(data["annotations"]):
        track = annotation.get("track") if isinstance(annotation, dict) else None
        if not (isinstance(track, list) and "id" in annotation):
            raise UserInputError(f"tube file {path}: annotations[{i}] needs an 'id' and a 'track' list")
        boxes = []
        for j, frame in enumerate(annotation["track"]):
            number, box = (frame.get("frame"), frame.get("bbox")) if isinstance(frame, dict) else (None, None)
            number_ok = isinstance(number, int) and not isinstance(number, bool) and number >= 1
            if not (number_ok and isinstance(box, list) and len(box) == 4 and all(map(is_coordinate, box))):
                raise UserInputError(
                    f"tube file {path}: annotations[{i}].track[{j}] needs 'frame' (an int >= 1) and "
                    f"'bbox' ([x1, y1, x2, y2] numbers)"
                )
            boxes.append((number, list(box)))
        boxes.sort(key=lambda item: item[0])
        if len({number for number, _ in boxes}) != len(boxes):
            raise UserInputError(f"tube file {path}: track {annotation['id']} lists a frame twice")
        tracks[str(annotation["id"]).strip()] = boxes
    return tracks


def build_split(vid_sentence_root: Path, vid_frames_root: Path, split: str) -> SplitIndex:
    """The index of one VID-Sentence split (``train`` or ``test``)."""
    ann_dir = vid_sentence_root / "Data" / "VID" / "annSamples"
    split_dir = SPLIT_DIRS[split]
    valid_path = ann_dir / f"{split}_valid_list.txt"
    tubes = read_valid_list(valid_path)
    sentences = read_ann_list(ann_dir / f"{split}_ann_list_v2.txt", len(tubes))
    tube_files: dict[str, dict[str, list[tuple[int, list[float]]]]] = {}
    videos = []
    for tube_id, sentence in sentences:
        video, track = tubes[tube_id]
        if video not in tube_files:
            tube_path = vid_sentence_root / "Annotations" / "VID" / "tubeGt" / split_dir / f"{video}.js"
            tube_files[video] = read_tube_file(tube_path, video)
        if not tube_files[video].get(track):
            raise UserInputError(
                f"{valid_path} line {tube_id + 1}: video {video} has no track {track} (or it has no frames) "
                f"in its tube file"
            )
        frame_dir = vid_frames_root / split_dir / video
        videos.append(
            [((frame_dir / f"{number - 1:06d}.JPEG").as_posix(), box, sentence)
             for number, box in tube_files[video][track]]
        )
    used_tubes = len({tube_id for tube_id, _ in sentences})
    return SplitIndex(videos, [sentence for _, sentence in sentences], len(tubes), used_tubes)


def check_split(index: SplitIndex, split: str, ann_list: Path) -> None:
    """What the loaders will check in the written index (``dataset.common``), checked before writing: a split
    with no sentence would be an empty index."""
    if not index.videos:
        raise UserInputError(f"{ann_list}: the {split} split has no sentence, so its index would be empty "
                             "(the scripts refuse an empty index)")
    frames = [(v, t) for v, video in enumerate(index.videos) for t in range(len(video))]

    def describe(i: int) -> str:
        v, t = frames[i]
        return f"{split} split, video {v} frame {t} ({index.videos[v][t][0]})"

    check_image_paths([index.videos[v][t][0] for v, t in frames], describe)
    check_boxes([index.videos[v][t][1] for v, t in frames], xywh=False, describe=describe)
    check_phrases([index.videos[v][t][2] for v, t in frames], None, ann_list, describe)


def resolve_corpus(train_sentences: Iterable[str], corpus_path: str | os.PathLike | None) -> Corpus:
    """The given corpus (``--corpus``, e.g. the authors' vocabulary) or one built from the training sentences.

    With a given corpus, prints how many training words it lacks (they will map to ``<unk>``).
    """
    if corpus_path is None:
        return build_corpus(train_sentences)
    corpus = load_corpus(corpus_path)
    words = {word for sentence in train_sentences for word in split_words(sentence)}
    unknown = sum(word not in corpus.dictionary for word in words)
    print(f"corpus: reusing {corpus_path} ({len(corpus)} words; {unknown} of {len(words)} training words "
          f"are not in it and map to <unk>)")
    return corpus


def _same_content(path: Path, obj: Any) -> bool:
    try:
        old = safe_load(path, what="existing output", allowed_globals=[Corpus, Dictionary])
    except UserInputError:
        return False
    if isinstance(obj, Corpus):
        return isinstance(old, Corpus) and (old.dictionary.idx2word, old.dictionary.word2idx) == (
            obj.dictionary.idx2word, obj.dictionary.word2idx)
    return type(old) is type(obj) and old == obj


def write_outputs(outputs: dict[Path, Any], force: bool) -> None:
    """Save every output atomically; an existing file with the same content is left alone.

    Refuses (before writing anything) when an existing output differs, unless ``force``.
    """
    changed = {path: obj for path, obj in outputs.items() if not (path.exists() and _same_content(path, obj))}
    clashes = [str(path) for path in changed if path.exists()]
    if clashes and not force:
        raise UserInputError(f"refusing to overwrite {', '.join(clashes)} (different content); pass --force")
    kept: list[Path] = []
    with keeps(kept):
        for path, obj in outputs.items():
            if path in changed:
                kept.append(atomic_save(obj, path))
                print(f"wrote {path}")
            else:
                print(f"unchanged {path}")


def claim_out(inputs: dict[str, str | None], out: Path, names: Iterable[str]) -> contextlib.ExitStack:
    """A tool's ``--out`` folder and the files ``names`` in it apart from its inputs, and locked against a
    second run of a tool on it (release: ``with``)."""
    check_paths(inputs, {"--out": (out, FOLDER), **{f"--out ({name})": (out / name, FILE) for name in names}})
    check_output("--out", out, FOLDER)
    return lock_outputs({"--out": out})


def build(
    vid_sentence_root: str | os.PathLike,
    vid_frames_root: str | os.PathLike,
    out: str | os.PathLike,
    corpus_path: str | os.PathLike | None = None,
    allow_missing: bool = False,
    force: bool = False,
) -> None:
    """Read VID-Sentence, report counts and missing frames, write the two indexes and ``corpus.pth``."""
    root, frames_root = Path(vid_sentence_root), Path(vid_frames_root)
    check_output("--out", Path(out), FOLDER)
    splits = {split: build_split(root, frames_root, split) for split in SPLIT_DIRS}
    for split, index in splits.items():
        check_split(index, split, root / "Data" / "VID" / "annSamples" / f"{split}_ann_list_v2.txt")
    missing, num_images = [], 0
    for split, index in splits.items():
        paths = index.frame_paths()
        lost = sorted(path for path in paths if not os.path.isfile(path))
        missing += lost
        num_images += len(paths)
        print(f"{split}: {index.listed_tubes} tubes listed, {index.used_tubes} with a sentence, "
              f"{len(index.videos)} sentences, {index.num_frames} frames ({len(paths)} distinct images, "
              f"{len(lost)} missing)")
    if missing:
        shown = "\n  ".join(missing[:MISSING_SHOWN]) + ("\n  ..." if len(missing) > MISSING_SHOWN else "")
        message = f"{len(missing)} frame images not found under {vid_frames_root}, e.g.\n  {shown}"
        if len(missing) == num_images:
            message += "\nnone of them exists: --vid_frames_root should be ILSVRC2015/Data/VID (see --help)"
        if not allow_missing:
            raise UserInputError(f"{message}\npass --allow_missing to write the index anyway")
        print(f"warning: {message}", file=sys.stderr)
    corpus = resolve_corpus(splits["train"].sentences, corpus_path)
    out = Path(out)
    outputs: dict[Path, Any] = {out / f"VID_video_level_{name}.pth": s.videos for name, s in splits.items()}
    outputs[out / "corpus.pth"] = corpus
    write_outputs(outputs, force)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m tools.build_vid_sentence",
        description="Build data/VID/VID_video_level_{train,test}.pth and corpus.pth from VID-Sentence.",
        epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--vid_sentence_root", required=True, help="root of the VID-Sentence repository")
    parser.add_argument("--vid_frames_root", required=True, help="ImageNet VID frames (ILSVRC2015/Data/VID)")
    parser.add_argument("--out", default="data/VID", help="output folder (default: data/VID)")
    parser.add_argument("--corpus", default=None,
                        help="reuse this corpus.pth (e.g. the authors', to evaluate their checkpoints)")
    parser.add_argument("--allow_missing", action="store_true", help="write indexes despite missing frames")
    parser.add_argument("--force", action="store_true", help="overwrite outputs that hold other content")
    return parser


def run(args: argparse.Namespace) -> None:
    inputs = {"--vid_sentence_root": args.vid_sentence_root, "--vid_frames_root": args.vid_frames_root,
              "--corpus": args.corpus}
    names = [*(f"VID_video_level_{split}.pth" for split in SPLIT_DIRS), "corpus.pth"]
    with claim_out(inputs, Path(args.out), names):
        build(args.vid_sentence_root, args.vid_frames_root, args.out,
              corpus_path=args.corpus, allow_missing=args.allow_missing, force=args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, get_args_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
