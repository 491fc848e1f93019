"""Compares the outputs of tests/gpu/check.sh on cuda against the CPU's; exits 1 on a mismatch.

    python3 tests/gpu/compare.py OUT_DIR

Tolerances: class probabilities 1e-4; layer CAMs (scaled to [0, 1]) 1e-3; pixel attributions
(saliency, Integrated Gradients: single-pixel gradients, summed in another order) 2e-2;
filter patterns by gradient ascent (each step amplifies the last one's rounding) 5 % of the
final loss; trained models the same validation accuracy and a loss within 1e-3.
"""

import json
import re
import sys
from pathlib import Path

R = Path(sys.argv[1])
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def read_json(path):
    """The JSON in `path`, or None when it is missing or not JSON (a failed command)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load(name):
    """What command `name` printed with --json."""
    return read_json(R / f"{name}.out")


def sidecar(name):
    """The JSON sidecar of command `name`'s figure."""
    return read_json(R / f"{name}.json")


rcs = dict(re.findall(r"^(\S+)\s+rc=(\d+)", (R / "times.txt").read_text(), re.M))
refused_on_cuda = {"cam_guided-backprop_cuda"}  # the guided methods are CPU-only, by design
for name, rc in sorted(rcs.items()):
    if name in refused_on_cuda:
        err = (R / f"{name}.err").read_text()
        check(rc != "0" and "runs on the CPU only" in err, f"{name} refused with the reason")
    else:
        check(rc == "0", f"{name} exit status {rc}")

a, b = load("predict_cpu"), load("predict_cuda")
if a and b:
    same = all([t["index"] for t in x["top"]] == [t["index"] for t in y["top"]] for x, y in zip(a, b))
    worst = max(abs(t["prob"] - u["prob"]) for x, y in zip(a, b) for t, u in zip(x["top"], y["top"]))
    check(same and worst < 1e-4, f"predict: same top-5, max |dprob| {worst:.1e}")

for cpu in sorted(R.glob("cam_*_cpu.out")):
    name = cpu.name[: -len("_cpu.out")]
    a, b = load(name + "_cpu"), load(name + "_cuda")
    if not a or not b:
        continue
    la = [v for row in a["lowres"] for v in row]
    lb = [v for row in b["lowres"] for v in row]
    d = max(abs(x - y) for x, y in zip(la, lb))
    tol = 1e-3 if a["kind"] == "layer" else 2e-2
    check(a["class"] == b["class"] and len(la) == len(lb) and d < tol,
          f"{name}: class {a['class']}/{b['class']}, map max |d| {d:.1e} (tolerance {tol:g})")

for name in ["filt_chollet", "filt_lucid", "filt_vgg16"]:
    a, b = sidecar(name + "_cpu"), sidecar(name + "_cuda")
    if not a or not b:
        continue
    fa, fb = a["result"]["final_loss"], b["result"]["final_loss"]
    rel = max(abs(x - y) / max(abs(x), 1e-3) for x, y in zip(fa, fb))
    check(rel < 0.05, f"{name}: final losses within {rel:.1%}")

for name in ["act"]:
    a, b = sidecar(name + "_cpu"), sidecar(name + "_cuda")
    if a and b:
        ma, mb = a["result"]["mean"], b["result"]["mean"]
        check(abs(ma - mb) < 1e-4 * max(1.0, abs(ma)), f"{name}: mean activation {ma:.6f} / {mb:.6f}")

for name in ["eval_extract", "eval_finetune"]:
    a, b = load(name + "_cpu"), load(name + "_cuda")
    if a and b:
        check(a["accuracy"] == b["accuracy"] and abs(a["loss"] - b["loss"]) < 1e-3,
              f"{name}: accuracy {a['accuracy']} / {b['accuracy']}, loss {a['loss']:.4f} / {b['loss']:.4f}")

for name in ["train_scratch"]:
    accs = []
    for d in ["cpu", "cuda"]:
        log = R / f"{name}_{d}.err"
        m = re.search(r"validation accuracy ([\d.]+)", log.read_text()) if log.exists() else None
        accs.append(float(m.group(1)) if m else None)
    # From scratch, dropout and augmentation draw on each device's own generator: only sanity.
    check(all(x is not None and x > 0.5 for x in accs), f"{name}: validation accuracy {accs} (> 0.5)")

print(f"{len(failures)} mismatches" if failures else "cuda matches the CPU")
sys.exit(1 if failures else 0)
