"""Does co-grounding help on the demo? The demo's recipe (run_demo.py) with several training seeds on one data set.

    python -m bench.seed_study --seeds 3 --backbone pretrained --out /tmp/seed_study [--parallel 2]

The synthetic set is generated once (``run_demo.py --steps data``), then each seed runs ``run_demo.py --steps
predictions --seed S`` (SL-Att, CG-SL-Att from it, 5-frame evaluation, post-processing) into ``<out>/seed_<S>/``,
logging to ``<out>/seed_<S>.log``; a seed whose ``results.json`` exists is reused, so an interrupted study resumes.
Then ``<out>/summary.json`` and ``<out>/summary.md``: per method the accuracy (IoU > 0.5) mean ± std over seeds,
and the paired differences CG - SL, PP - SL and PP - CG with two 95% percentile bootstrap intervals: over frames
(the seed-averaged per-frame difference, resampling videos, i.e. clusters of frames, not single frames) and over
seeds and frames (two levels: resample seeds, then videos within each); overall, per expression type, on clean and
hard frames and per degradation kind with at least ``MIN_GROUP`` frames (docs/seed_study.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.analysis import CLEAN, HARD, Frame, Table, groups, hits, load_index_info, markdown_table, pair, read_run
from tools.fetch_backbone import fetch_backbone
from utils.bootstrap import cluster_bootstrap, two_level_bootstrap
from utils.cli import ArgumentParser, one_line, positive_int
from utils.io import UserInputError, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FIRST_SEED = 13  # the demo's own training seed, so the demo's run is one of the study's
METHODS = {"SL": "SL-Att (per frame)", "CG": "CG-SL-Att", "PP": "CG-SL-Att + post-processing"}
DIFFERENCES = (("CG", "SL"), ("PP", "SL"), ("PP", "CG"))
# --control: SL-Att trained further, as long as CG-SL-Att trains after it (run_demo.py --steps control; the method
# and file names are run_demo.py's CONTROL)
CONTROL_METHOD, CONTROL_FILE = "SL-Att, trained longer", "slatt_more.jsonl"
CONTROL_METHODS = {**METHODS, "SL+": CONTROL_METHOD}
CONTROL_DIFFERENCES = (*DIFFERENCES, ("CG", "SL+"), ("PP", "SL+"), ("SL+", "SL"))
MIN_GROUP = 30  # frames a degradation kind needs to get its own row


def demo_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_demo.py"), *args]


def run_seeds(seeds: list[int], out: Path, data: Path, extra: list[str], parallel: int, threads: int,
              step: str = "predictions") -> None:
    """Run ``run_demo.py --steps <step>`` for the seeds that lack its output (``results.json``, or the control's
    predictions), ``parallel`` at a time with ``threads`` threads each."""
    done = "results.json" if step == "predictions" else CONTROL_FILE
    todo = [s for s in seeds if not (out / f"seed_{s}" / done).is_file()]
    print(f"seed study ({step}): {len(seeds) - len(todo)} of {len(seeds)} seeds done, running {todo}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: list[tuple[int, subprocess.Popen, Any]] = []
    failed = []
    while todo or running:
        while todo and len(running) < parallel:
            seed = todo.pop(0)
            log = open(out / f"seed_{seed}.log", "w" if step == "predictions" else "a",  # noqa: SIM115
                       encoding="utf-8")  # closed when it ends
            command = demo_command("--steps", step, "--data", str(data), "--out", str(out / f"seed_{seed}"),
                                   "--seed", str(seed), "--overwrite", *extra)
            print(f"seed {seed}: {' '.join(command)}", flush=True)
            running.append((seed, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(5)
        for item in list(running):
            seed, process, log = item
            if process.poll() is not None:
                log.close()
                running.remove(item)
                if process.returncode:
                    failed.append(seed)
                print(f"seed {seed}: {'failed (see its log)' if process.returncode else 'done'}", flush=True)
    if failed:
        raise SystemExit(f"seed study: seeds {failed} failed; their logs are in {out}")


def load_seed(folder: Path, info: Any, methods: dict[str, str] = METHODS
              ) -> tuple[dict[str, list[Frame]], dict[str, Any]]:
    results = json.loads((folder / "results.json").read_text())
    names = results["predictions"]
    missing = [method for method in methods.values() if method not in names]
    if missing:
        raise UserInputError(f"{folder / 'results.json'} has no predictions of {', '.join(missing)}")
    runs = {key: read_run(folder / names[method], info) for key, method in methods.items()}
    return runs, results


def aligned_hits(per_seed: list[dict[str, list[Frame]]]) -> tuple[list[Frame], dict[str, np.ndarray]]:
    """The frames every seed and method scored (in the first seed's SL order) and per method the hit matrix
    (S, N)."""
    base = per_seed[0]["SL"]
    for runs in per_seed:
        for frames in runs.values():
            base, _ = pair(base, frames)
    matrices = {}
    for key in per_seed[0]:
        rows = []
        for runs in per_seed:
            _, matched = pair(base, runs[key])
            rows.append(hits(matched))
        matrices[key] = np.stack(rows)  # (S, N)
    return base, matrices


def study_groups(frames: list[Frame]) -> dict[str, np.ndarray]:
    """Group name -> frame mask (N,): all frames, each expression type, clean / hard and each degradation kind
    with at least :data:`MIN_GROUP` frames."""
    index = {id(f): i for i, f in enumerate(frames)}
    out = {"all": np.ones(len(frames), dtype=bool)}
    for by in ("types", "degradation"):
        for name, members in groups(frames, by).items():
            if by == "degradation" and name not in (CLEAN, HARD) and len(members) < MIN_GROUP:
                continue
            mask = np.zeros(len(frames), dtype=bool)
            mask[[index[id(f)] for f in members]] = True
            out[name if by == "types" else f"{name} frames" if name in (CLEAN, HARD) else name] = mask
    return out


def aggregate(per_seed: list[dict[str, list[Frame]]], seeds: list[int], seed: int = 0,
              methods: dict[str, str] = METHODS, differences: tuple[tuple[str, str], ...] = DIFFERENCES
              ) -> dict[str, Any]:
    """Mean ± std over seeds per method and group, and the paired differences with their two intervals."""
    frames, matrices = aligned_hits(per_seed)
    clips = np.array([f.clip for f in frames])
    result: dict[str, Any] = {"seeds": seeds, "frames": len(frames), "videos": len(set(clips)), "groups": {}}
    for group, mask in study_groups(frames).items():
        entry: dict[str, Any] = {"frames": int(mask.sum()), "videos": len(set(clips[mask])), "methods": {},
                                 "differences": {}}
        for key, method in methods.items():
            per = matrices[key][:, mask].mean(1)  # (S,)
            entry["methods"][method] = {"per_seed": per.tolist(), "mean": float(per.mean()),
                                        "std": float(per.std(ddof=1)) if len(per) > 1 else 0.0}
        for a, b in differences:
            diff = matrices[a][:, mask] - matrices[b][:, mask]  # (S, n)
            mean, low, high = cluster_bootstrap(diff.mean(0), clips[mask], seed=seed)
            _, low2, high2 = two_level_bootstrap(diff, clips[mask], seed=seed)
            entry["differences"][f"{a} - {b}"] = {"mean": mean, "per_seed": diff.mean(1).tolist(),
                                                  "frames_interval": [low, high],
                                                  "seeds_frames_interval": [low2, high2]}
        result["groups"][group] = entry
    result["methods"] = {method: {"accuracy": {k: result["groups"]["all"]["methods"][method][k]
                                               for k in ("mean", "std")}} for method in methods.values()}
    return result


def interval(pair_: list[float]) -> str:
    return f"[{pair_[0]:+.3f}, {pair_[1]:+.3f}]"


def markdown(result: dict[str, Any]) -> str:
    """The summary tables: accuracy mean ± std per method and group, then the differences with both intervals."""
    methods = list(result["methods"])
    acc = Table(["frames", "count (videos)", *methods], [
        [g, f"{e['frames']} ({e['videos']})",
         *[f"{e['methods'][m]['mean']:.3f} ± {e['methods'][m]['std']:.3f}" for m in methods]]
        for g, e in result["groups"].items()])
    diffs = Table(["frames", "difference", "mean", "95% CI, frames (videos resampled)",
                   "95% CI, seeds and frames", "per seed"], [
        [g, name, f"{d['mean']:+.3f}", interval(d["frames_interval"]), interval(d["seeds_frames_interval"]),
         " ".join(f"{x:+.3f}" for x in d["per_seed"])]
        for g, e in result["groups"].items() for name, d in e["differences"].items()])
    walls = result.get("wall_time_s", {})
    lines = [f"Seeds {result['seeds']}, backbone {result.get('backbone', '?')}, {result['frames']} test frames in "
             f"{result['videos']} videos. Accuracy at IoU 0.5, mean ± std over seeds:", "", markdown_table(acc), "",
             "Paired differences (SL = SL-Att per frame, CG = CG-SL-Att, PP = CG-SL-Att + post-processing"
             + (f", SL+ = {CONTROL_METHODS['SL+']}" if CONTROL_METHODS["SL+"] in methods else "") + "):", "",
             markdown_table(diffs)]
    if walls:
        lines += ["", "Wall time per seed (s): " + ", ".join(f"{s}: {t:.0f}" for s, t in walls["per_seed"].items())
                  + f"; sum {sum(walls['per_seed'].values()):.0f} s."]
        if "this_run" in walls:
            lines[-1] += (f" This invocation of the study (data, the seeds not done before, {result['parallel']} at a "
                          f"time, and this summary): {walls['this_run']:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=positive_int, default=3, help=f"number of training seeds ({FIRST_SEED}, ...)")
    parser.add_argument("--backbone", default=None, choices=("pretrained", "random"),
                        help="run_demo.py's backbone (default: the demo's default)")
    parser.add_argument("--out", required=True, help="folder of the per-seed runs and the summary")
    parser.add_argument("--data", default=None, help="the synthetic set (default <out>/data), generated once")
    parser.add_argument("--parallel", type=positive_int, default=1, help="seeds run at the same time")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="OMP threads per seed (default: CPU cores / --parallel)")
    parser.add_argument("--quick", action="store_true", help="run_demo.py --quick (a smoke test of the study)")
    parser.add_argument("--control", action="store_true",
                        help="also train each seed's SL-Att further, as long as CG-SL-Att trains after it "
                             "(run_demo.py --steps control), and compare CG-SL-Att with it: the gain at equal training")
    parser.add_argument("--summary_only", action="store_true",
                        help="run nothing: summarise the seeds that are done (e.g. while the others still run)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else out / "data"
    extra = [*(["--backbone", args.backbone] if args.backbone else []), *(["--quick"] if args.quick else [])]
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    start = time.perf_counter()
    if args.summary_only:
        seeds = [s for s in seeds if (out / f"seed_{s}" / "results.json").is_file()]
        if not seeds:
            raise SystemExit(f"seed study: no seed is done in {out}")
    else:
        if args.backbone == "pretrained":  # once, before the seeds run in parallel (each would fetch it)
            try:
                fetch_backbone()
            except UserInputError as err:
                raise SystemExit(f"seed study: no pretrained backbone: {one_line(err)}") from err
        if subprocess.run(demo_command("--steps", "data", "--data", str(data), *extra), check=False).returncode:
            raise SystemExit("seed study: generating the data failed (see above)")
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
        run_seeds(seeds, out, data, extra, args.parallel, threads)
        if args.control:
            run_seeds(seeds, out, data, extra, args.parallel, threads, step="control")
    methods, differences = (CONTROL_METHODS, CONTROL_DIFFERENCES) if args.control else (METHODS, DIFFERENCES)
    degradations = data / "VID" / "degradations_test.json"
    try:
        info = load_index_info(data, data, "VID", "test", degradations if degradations.is_file() else None)
        loaded = [load_seed(out / f"seed_{s}", info, methods) for s in seeds]
    except UserInputError as err:
        raise SystemExit(f"seed study: {err}") from err
    used = {r.get("backbone") for _, r in loaded}
    if len(used) != 1 or (args.backbone and used != {args.backbone}):
        raise SystemExit(f"seed study: the seeds ran with backbones {sorted(map(str, used))}, not all "
                         f"{args.backbone or 'the same'} (a fallback to random? see the seed logs)")
    result = aggregate([runs for runs, _ in loaded], seeds, methods=methods, differences=differences)
    result.update(backbone=used.pop(), parallel=args.parallel,
                  date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  machine=f"{platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or '?'})",
                  wall_time_s={"per_seed": {str(s): r["total_s"] for s, (_, r) in zip(seeds, loaded)}})
    if not args.summary_only:
        result["wall_time_s"]["this_run"] = time.perf_counter() - start
    atomic_write_text(json.dumps(result, indent=1) + "\n", out / "summary.json")
    text = markdown(result)
    atomic_write_text(text, out / "summary.md")
    print("\n" + text)
    print(f"summary: {out / 'summary.md'}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
