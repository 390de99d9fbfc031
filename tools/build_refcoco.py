"""Build the RefCOCO / RefCOCO+ / RefCOCOg index files (docs/behaviour.md §1) from the ``refer`` annotations.

One item per sentence, in the order of the refs pickle and of each ref's sentences:
``(image_file, mask_file, [x, y, w, h], sentence, attributes)`` for unc / unc+ and
``(image_file, [x, y, w, h], sentence)`` for gref (docs/behaviour.md §1 item layouts). ``image_file`` is
``COCO_train2014_%012d.jpg`` of the ref's ``image_id``; the box is the COCO bbox of the ref's ``ann_id``;
the sentence is ``sent`` (``raw`` when a sentence has no ``sent``); ``mask_file`` is ``<ref_id>.npy``
(a name only: no mask is written and the loaders ignore it); ``attributes`` are the ref's ``att_wds``
when present, else ``[]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.checks import FOLDER, check_output
from dataset.common import check_boxes
from tools.build_vid_sentence import claim_out, is_coordinate, resolve_corpus, write_outputs
from tools.restricted_pickle import load_plain_pickle
from utils.cli import ArgumentParser, run_main
from utils.io import UserInputError, read_text

# dataset -> (refer folder, default splitBy)
DATASETS = {"unc": ("refcoco", "unc"), "unc+": ("refcoco+", "unc"), "gref": ("refcocog", "umd")}
# datasets that also get <dataset>_trainval.pth = train + val (the reference's unc_trainval)
TRAINVAL_DATASETS = ("unc", "unc+")
REF_KEYS = {"ref_id": int, "ann_id": int, "image_id": int, "split": str, "sentences": list}

LAYOUT = """\
expected layout (github.com/lichengunc/refer, data/ folder):

  <refer_root>/
    refcoco/refs(unc).p  refcoco/instances.json     --dataset unc   (splits train, val, testA, testB)
    refcoco+/refs(unc).p refcoco+/instances.json    --dataset unc+  (splits train, val, testA, testB)
    refcocog/refs(umd).p refcocog/instances.json    --dataset gref  (splits train, val, test;
    refcocog/refs(google).p                                          --splitBy google: train, val)

  refs(*).p: a (Python 2) pickle of a list of refs
             {ref_id, ann_id, image_id, split, sentences: [{sent, raw}, ...]};
  instances.json: {"annotations": [{id, image_id, bbox [x, y, w, h], category_id}, ...]}.
  The pickle is read with a restricted unpickler (plain containers and scalars only).

writes <out>/<dataset>_<split>.pth (unc/unc+ also <dataset>_trainval.pth = train + val) and <out>/corpus.pth.
Images are named COCO_train2014_%012d.jpg; put the COCO train2014 images in
<data_root>/other/images/mscoco/images/train2014.
"""


def read_refs(path: Path) -> list[dict[str, Any]]:
    """The refs of a ``refs(*).p`` pickle, each checked for the keys the index needs."""
    refs = load_plain_pickle(path, what="refs pickle")
    if not isinstance(refs, list):
        raise UserInputError(f"refs pickle {path}: expected a list of refs, got {type(refs).__name__}")
    for i, ref in enumerate(refs):
        fields = ref if isinstance(ref, dict) else {}
        bad = [key for key, kind in REF_KEYS.items() if not isinstance(fields.get(key), kind)]
        if bad:
            expected = ", ".join(f"{key} ({kind.__name__})" for key, kind in REF_KEYS.items())
            raise UserInputError(f"refs pickle {path}: ref #{i} lacks {', '.join(bad)} (needs {expected})")
        for j, sent in enumerate(ref["sentences"]):
            if not isinstance(sent, dict) or not isinstance(sent.get("sent", sent.get("raw")), str):
                raise UserInputError(
                    f"refs pickle {path}: ref_id {ref['ref_id']} sentence #{j} needs a 'sent' or 'raw' string"
                )
    return refs


def read_boxes(path: Path) -> dict[int, tuple[int, list[float]]]:
    """Annotation id -> ``(image_id, [x, y, w, h])`` from a COCO-style ``instances.json``."""
    try:
        data = json.loads(read_text(path, "instances file"))
    except json.JSONDecodeError as err:
        raise UserInputError(f"instances file {path} is not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise UserInputError(f"instances file {path}: expected an object with an 'annotations' list")
    boxes = {}
    for i, ann in enumerate(data["annotations"]):
        box = ann.get("bbox") if isinstance(ann, dict) else None
        box_ok = isinstance(box, list) and len(box) == 4 and all(map(is_coordinate, box))
        if not (box_ok and isinstance(ann.get("id"), int) and isinstance(ann.get("image_id"), int)):
            raise UserInputError(
                f"instances file {path}: annotations[{i}] needs 'id', 'image_id' (ints), 'bbox' [x, y, w, h]"
            )
        boxes[ann["id"]] = (ann["image_id"], list(box))
    return boxes


def build_items(refs: list[dict[str, Any]], boxes: dict[int, tuple[int, list[float]]], dataset: str,
                refs_path: Path) -> dict[str, list[tuple]]:
    """Split -> items (one per non-empty sentence), splits in order of first appearance."""
    items: dict[str, list[tuple]] = {}
    for ref in refs:
        if ref["ann_id"] not in boxes:
            raise UserInputError(f"{refs_path}: ref_id {ref['ref_id']} names ann_id {ref['ann_id']}, "
                                 f"which is not in instances.json")
        image_id, box = boxes[ref["ann_id"]]
        if image_id != ref["image_id"]:
            raise UserInputError(
                f"{refs_path}: ref_id {ref['ref_id']} is on image {ref['image_id']} but its annotation "
                f"{ref['ann_id']} is on image {image_id} (instances.json of another dataset?)"
            )
        image_file = f"COCO_train2014_{ref['image_id']:012d}.jpg"
        attributes = list(ref.get("att_wds") or [])
        for sent in ref["sentences"]:
            sentence = (sent.get("sent") or sent.get("raw") or "").strip()
            if not sentence:
                continue
            item = (image_file, list(box), sentence) if dataset == "gref" else (
                image_file, f"{ref['ref_id']}.npy", list(box), sentence, attributes)
            items.setdefault(ref["split"], []).append(item)
    return items


def build(
    refer_root: str | os.PathLike,
    dataset: str,
    out: str | os.PathLike,
    split_by: str | None = None,
    corpus_path: str | os.PathLike | None = None,
    force: bool = False,
) -> None:
    """Read the refs and instances of ``dataset``, report counts, write the split indexes and corpus.pth."""
    if dataset not in DATASETS:
        raise UserInputError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    check_output("--out", Path(out), FOLDER)
    folder, default_split_by = DATASETS[dataset]
    refs_path = Path(refer_root) / folder / f"refs({split_by or default_split_by}).p"
    refs = read_refs(refs_path)
    items = build_items(refs, read_boxes(Path(refer_root) / folder / "instances.json"), dataset, refs_path)
    if "train" not in items:
        raise UserInputError(f"refs pickle {refs_path} has no ref in split 'train' (found {sorted(items)})")
    if dataset in TRAINVAL_DATASETS and "val" in items:
        items["trainval"] = items["train"] + items["val"]
    sentence_at = 2 if dataset == "gref" else 3
    for split, split_items in items.items():  # what the loaders check in the written index (dataset.common)
        check_boxes([item[sentence_at - 1] for item in split_items], xywh=True,
                    describe=lambda i, split=split: f"{split} split, item {i} (image {items[split][i][0]})")
    for split, split_items in items.items():
        print(f"{split}: {len(split_items)} sentences, {len({item[0] for item in split_items})} images")
    skipped = sum(len(ref["sentences"]) for ref in refs) - sum(
        len(split_items) for split, split_items in items.items() if split != "trainval")
    if skipped:
        print(f"skipped {skipped} empty sentences")
    corpus = resolve_corpus((item[sentence_at] for item in items["train"]), corpus_path)
    out = Path(out)
    outputs: dict[Path, Any] = {out / f"{dataset}_{split}.pth": part for split, part in items.items()}
    outputs[out / "corpus.pth"] = corpus
    write_outputs(outputs, force)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m tools.build_refcoco",
        description="Build data/<dataset>/<dataset>_<split>.pth and corpus.pth from the refer annotations.",
        epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--refer_root", required=True, help="the refer data folder (holding refcoco/, ...)")
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--out", default=None, help="output folder (default: data/<dataset>)")
    parser.add_argument("--splitBy", dest="split_by", choices=["unc", "umd", "google"], default=None,
                        help="which refs(<splitBy>).p to read (default: unc for unc/unc+, umd for gref)")
    parser.add_argument("--corpus", default=None,
                        help="reuse this corpus.pth (e.g. the authors', to evaluate their checkpoints)")
    parser.add_argument("--force", action="store_true", help="overwrite outputs that hold other content")
    return parser


def run(args: argparse.Namespace) -> None:
    out = Path(args.out or f"data/{args.dataset}")
    with claim_out({"--refer_root": args.refer_root, "--corpus": args.corpus}, out, ["corpus.pth"]):
        build(args.refer_root, args.dataset, out, args.split_by, args.corpus, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, get_args_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
