"""Runs the convlens suite (`cargo bench --bench suite`) and the reference (`perf.py`)
alternately, ROUNDS times, and prints one table of medians and ratios measured in that run.

    python benches/reference/compare.py [--rounds 3] [--quick] [--only a,b] [--out FILE.json]

Use the venv that has torch and onnxruntime (see README.md here). Every ratio is
`convlens time / reference time` (lower is better; for throughputs the inverse ratio of
images/s), computed per round and then the median over rounds is taken. "other cores" is how
many cores other processes used during the round (from /proc/stat minus the benchmarks' own CPU
time): with 2 cores, anything above ~0.2 means the numbers are contaminated by other work.

The reference runs with OMP_WAIT_POLICY=PASSIVE unless --omp-active: with 2 OpenMP threads on
a shared machine the default spin-waiting collapses torch's speed 3-10x (see perf-anchors), which
would flatter convlens.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# workload -> (unit, the reference columns shown)
WORKLOADS = {
    "fwd_b1": ("ms", ["torch", "jit", "ort"]),
    "fwd_b32": ("img/s", ["torch", "jit", "ort"]),
    "extract_folder": ("img/s", ["torch", "ort"]),
    "finetune_top_b16": ("ms", ["torch"]),
    "finetune_all_b16": ("ms", ["torch"]),
    "head_epoch": ("ms", ["torch"]),
    "gradcam": ("ms", ["torch", "torch_head_only"]),
    "ascent_128_b10": ("ms", ["torch"]),
    "scorecam": ("ms", ["torch", "jit", "ort", "ort_shared"]),
    "lucid_step_grid16": ("ms", ["torch"]),
    "vgg16_b32": ("img/s", ["torch", "ort"]),
    "resnet50_b32": ("img/s", ["torch", "ort"]),
    "resnet18_b32": ("img/s", ["torch", "ort"]),
    "resnet50_finetune_layer4_b16": ("ms", ["torch"]),
    "vgg16_ascent_128": ("ms", ["torch"]),
}


def busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # minus idle, iowait


def run(cmd, env=None):
    t0, b0 = time.time(), busy_jiffies()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, busy = time.time() - t0, (busy_jiffies() - b0) / os.sysconf("SC_CLK_TCK")
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    data = json.loads(out.stdout)
    data["other_cores"] = max(0.0, (busy - own) / wall)
    data["load1_start"] = os.getloadavg()[0]
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--omp-active", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench-compare.json"))
    args = ap.parse_args()
    extra = (["--quick"] if args.quick else []) + (["--only", args.only] if args.only else [])
    ours_cmd = ["cargo", "bench", "--quiet", "--bench", "suite", "--"] + extra
    ref_cmd = [sys.executable, str(HERE / "perf.py")] + extra
    env = dict(os.environ)
    if not args.omp_active:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "suite", "--no-run"], cwd=ROOT, check=True)
    rounds = []
    for r in range(args.rounds):
        order = [("ours", ours_cmd, None), ("ref", ref_cmd, env)]
        if r % 2:
            order.reverse()
        got = {}
        for name, cmd, e in order:
            print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
            got[name] = run(cmd, e)
        rounds.append(got)

    lines = [
        "| workload | unit | convlens | " + " | ".join(["reference", "ratio (time)"]) + " |",
        "| --- | --- | ---: | --- | --- |",
    ]
    summary = {}
    for w, (unit, refs) in WORKLOADS.items():
        ours = [rd["ours"]["results"].get(w, {}).get("median") for rd in rounds]
        if None in ours:
            continue
        cells_ref, cells_ratio = [], []
        for impl in refs:
            key = f"{impl}.{w}" if impl != "torch_head_only" else f"torch.{w}_head_only"
            refv = [rd["ref"]["results"].get(key, {}).get("median") for rd in rounds]
            if None in refv:
                continue
            ratios = [(o / f) if unit == "ms" else (f / o) for o, f in zip(ours, refv)]
            label = key.split(".")[0] + (" (to the layer only)" if impl == "torch_head_only" else "")
            cells_ref.append(f"{label} {statistics.median(refv):.4g}")
            cells_ratio.append(f"{statistics.median(ratios):.2f}x {label}")
            summary[key] = {"ref": statistics.median(refv), "ratio_time": statistics.median(ratios),
                            "ratios": ratios}
        summary[w] = {"ours": statistics.median(ours), "unit": unit, "runs": ours,
                      "peak_rss_mb": max(rd["ours"]["results"][w]["peak_rss_mb"] for rd in rounds)}
        lines.append(f"| {w} | {unit} | {statistics.median(ours):.4g} | {'; '.join(cells_ref)} | "
                     f"{'; '.join(cells_ratio)} |")
    if "extract_folder" in summary and "fwd_b32" in summary:
        f = [rd["ours"]["results"]["extract_folder"]["median"] / rd["ours"]["results"]["fwd_b32"]["median"]
             for rd in rounds]
        summary["extract_vs_forward"] = statistics.median(f)
        lines.append(f"\nfolder extraction / bare batch-32 forward (convlens): {statistics.median(f):.0%}")
    cond = " ".join(
        f"r{i + 1}: load1 {rd['ours']['load1_start']:.1f}/{rd['ref']['load1_start']:.1f}, other cores "
        f"{rd['ours']['other_cores']:.2f}/{rd['ref']['other_cores']:.2f};" for i, rd in enumerate(rounds))
    lines.append(f"\nconditions (convlens/reference): {cond}")
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))
    print(f"\nall numbers: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
