"""Grounding speed of ``ground.py`` (the :class:`app.grounder.Grounder`): frames/s for 1 and 4 sentences, fp32
and ``--amp``, with the full model (model/yolov3.cfg, 256 px, E = 512) on a synthetic 320 x 240 clip.

    python -m bench.ground_speed [--frames 20] [--rounds 2] [--batch_size 8]

Each frame's backbone runs once whatever the number of sentences, and each 5-frame window is co-grounded once;
only the grounding head runs per sentence, so 4 sentences should cost well under 4x one. Weights are random
(speed does not depend on them). The configurations are run alternately, ``--rounds`` times each, and the
fastest round is kept (the machine may be shared).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from app.grounder import Grounder, SourceFrame
from model import DEFAULT_CFG, build_grounding_model
from utils.geometry import DEFAULT_ANCHORS, Geometry
from utils.word_utils import build_corpus

SENTENCES = ("the red car on the left", "the man in a black coat", "the dog running to the right",
             "the small white boat behind the bridge")
SIZE, EMB = 256, 512


def clip(frames: int, seed: int = 0) -> list[SourceFrame]:
    """A 320 x 240 clip of smooth random frames (decoding is not what is measured)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return [SourceFrame(t, 0, "synthetic", np.roll(base, 4 * t, axis=1)) for t in range(frames)]


def seconds(grounder: Grounder, frames: list[SourceFrame], sentences: int) -> float:
    start = time.perf_counter()
    predictions = list(grounder.ground(frames, SENTENCES[:sentences]))
    assert len(predictions) == len(frames) * sentences
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="frames of the clip")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest is kept")
    parser.add_argument("--batch_size", type=int, default=8, help="frames and windows per forward")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}  CPUs: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"torch {torch.__version__}  load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    corpus = build_corpus(SENTENCES)
    torch.manual_seed(0)
    model = build_grounding_model("video", len(corpus), DEFAULT_CFG, SIZE, EMB)
    geometry = Geometry(SIZE, DEFAULT_ANCHORS, 416)
    amp = torch.float16 if device.type == "cuda" else torch.bfloat16
    grounders = {name: Grounder(model, "video", corpus, geometry, device=device, amp_dtype=dtype,
                                batch_size=args.batch_size)
                 for name, dtype in (("fp32", None), (f"amp ({str(amp).removeprefix('torch.')})", amp))}
    frames = clip(args.frames)
    for grounder in grounders.values():
        seconds(grounder, frames[:6], 1)  # warm-up (kernel selection)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for name, grounder in grounders.items():
            for sentences in (1, 4):
                elapsed = seconds(grounder, frames, sentences)
                best[(name, sentences)] = min(best.get((name, sentences), float("inf")), elapsed)
    print(f"\nfull model ({DEFAULT_CFG.name}, {SIZE} px, E={EMB}), {args.frames} frames of 320x240, "
          f"batch {args.batch_size}, best of {args.rounds} rounds")
    print("| precision | sentences | seconds | frames/s | time vs 1 sentence |")
    print("|---|---|---|---|---|")
    for (name, sentences), elapsed in best.items():
        ratio = elapsed / best[(name, 1)]
        print(f"| {name} | {sentences} | {elapsed:.2f} | {args.frames / elapsed:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
