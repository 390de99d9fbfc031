"""Cost per frame of the Darknet backbones as the grounding models run them (the three taps only): GFLOPs
(2 x multiply-adds, torch's FLOP counter) and forward milliseconds, batch 1, no gradients.

    python -m bench.backbone_cost [--sizes 128 256] [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from model import SMALL_CFG, TINY_CFG, Darknet


@torch.no_grad()
def cost(net: Darknet, size: int, repeats: int) -> tuple[float, float]:
    """(GFLOPs, median forward ms) of one ``size`` x ``size`` frame."""
    x = torch.rand(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return counter.get_total_flops() / 1e9, 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="input sizes (multiples of 32)")
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per size (the median is shown)")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print("| cfg | taps (channels @ stride) | size | GFLOPs | forward ms |")
    print("|---|---|---|---|---|")
    for cfg in (SMALL_CFG, TINY_CFG):
        net = Darknet(cfg).eval()
        taps = ", ".join(f"{c} @ {s}" for c, s in zip(net.feature_channels, net.feature_strides))
        for size in args.sizes:
            gflops, ms = cost(net, size, args.repeats)
            print(f"| {cfg.name} | {taps} | {size} | {gflops:.3f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
