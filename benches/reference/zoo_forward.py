"""Batch-32 forward throughput of the zoo's architectures in eager PyTorch (torchvision / timm,
random weights, eval mode, `no_grad`), to quote beside `cargo bench --bench forward -- --arch
ID` (issue #14: "batch-32 forward images/s of each new architecture beside PyTorch eager's on
the same machine in the same run"). `zoo_compare.sh` runs both alternately, one architecture at
a time. Never needed by the tests.

    python zoo_forward.py ID [ID ...] [--rounds 3] [--threads 2] [--batch 32]

Prints one JSON line per architecture: id, input size, median seconds per batch, images/s.
"""

import argparse
import json
import os
import statistics
import time

import timm
import torch
import torchvision

# convlens id -> (constructor, input size): the size is convlens's default for the id
# (`zoo::detect::default_preprocess`), so both sides run the same arithmetic.
MODELS = {
    "mobilenetv1_100": (lambda: timm.create_model("mobilenetv1_100"), 224),
    "legacy_xception": (lambda: timm.create_model("legacy_xception"), 299),
    "inception_v3": (
        lambda: torchvision.models.inception_v3(aux_logits=False, init_weights=False), 299),
    "convnext_tiny": (torchvision.models.convnext_tiny, 224),
    "convnext_small": (torchvision.models.convnext_small, 224),
    "densenet121": (torchvision.models.densenet121, 224),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, 224),
    "efficientnet_b1": (torchvision.models.efficientnet_b1, 240),
    "efficientnet_b2": (torchvision.models.efficientnet_b2, 288),
    "efficientnet_b3": (torchvision.models.efficientnet_b3, 300),
    "efficientnet_b4": (torchvision.models.efficientnet_b4, 380),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, 224),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, 224),
    "tf_efficientnet_lite0": (lambda: timm.create_model("tf_efficientnet_lite0"), 224),
    "mobilenetv2_100": (lambda: timm.create_model("mobilenetv2_100"), 224),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ids", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, help="override the input size")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for id_ in a.ids:
        make, size = MODELS[id_]
        size = a.size or size
        model = make().eval()
        x = torch.randn(a.batch, 3, size, size)
        with torch.no_grad():
            model(x)  # warm-up
            times = []
            for _ in range(a.rounds):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        s = statistics.median(times)
        print(json.dumps({"id": id_, "size": size, "batch": a.batch, "median_s": s,
                          "img_per_s": a.batch / s, "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
