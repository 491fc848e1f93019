"""The workloads of `benches/suite.rs` in PyTorch (eager and TorchScript-optimised) and ONNX
Runtime, on the same weights (models/efficientnet_lite0.safetensors) and the same inputs, printed
as JSON in the suite's format, so that every convlens number can be quoted as a ratio measured
in one run (see compare.py and README.md here).

    python perf.py [--quick] [--only a,b] [--folder DIR] [--threads 2]

Result names are `<impl>.<workload>` with impl `torch` (eager), `jit`
(`torch.jit.optimize_for_inference`: BatchNorm folded, ReLU6 fused) or `ort` (ONNX Runtime,
CPUExecutionProvider, graph optimisations on). Never needed by the tests.
"""

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "models" / "efficientnet_lite0.safetensors"
CHELSEA = ROOT / "assets" / "images" / "chelsea.png"
MEAN, STD = 0.498, 0.502
STRIDE2 = {1, 3, 5, 11}


# ---------------------------------------------------------------- the network (fixtures README)


class ConvBnAct(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, groups=1, act=True):
        layers = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=False))
        super().__init__(*layers)


class MBConv(nn.Module):
    def __init__(self, cin, mid, cout, k, stride):
        super().__init__()
        self.expand = ConvBnAct(cin, mid, 1) if mid != cin else None
        self.dw = ConvBnAct(mid, mid, k, stride, groups=mid)
        self.project = ConvBnAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.dw(h))
        return h + x if self.residual else h


class Lite0(nn.Module):
    """EfficientNet-Lite0 with the stage names of convlens (stem, blocks.i, head, fc)."""

    def __init__(self, sd):
        super().__init__()
        self.stem = ConvBnAct(3, 32, 3, 2)
        blocks = []
        i = 0
        while f"_blocks.{i}._depthwise_conv.weight" in sd:
            p = f"_blocks.{i}."
            dw = sd[p + "_depthwise_conv.weight"]
            mid, k = dw.shape[0], dw.shape[2]
            cout = sd[p + "_project_conv.weight"].shape[0]
            cin = sd[p + "_expand_conv.weight"].shape[1] if p + "_expand_conv.weight" in sd else mid
            blocks.append(MBConv(cin, mid, cout, k, 2 if i in STRIDE2 else 1))
            i += 1
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBnAct(320, 1280, 1)
        self.fc = nn.Linear(1280, 1000)
        self.load_native(sd)

    def load_native(self, sd):
        def bn(m, p):
            for n in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, n).data.copy_(sd[p + n])

        def cba(m, conv, bnp):
            m[0].weight.data.copy_(sd[conv])
            bn(m[1], bnp)

        cba(self.stem, "_conv_stem.weight", "_bn0.")
        for i, b in enumerate(self.blocks):
            p = f"_blocks.{i}."
            if b.expand is not None:
                cba(b.expand, p + "_expand_conv.weight", p + "_bn0.")
            cba(b.dw, p + "_depthwise_conv.weight", p + "_bn1.")
            cba(b.project, p + "_project_conv.weight", p + "_bn2.")
        cba(self.head, "_conv_head.weight", "_bn1.")
        self.fc.weight.data.copy_(sd["_fc.weight"])
        self.fc.bias.data.copy_(sd["_fc.bias"])

    def features(self, x, upto=None):
        x = self.stem(x)
        for i, b in enumerate(self.blocks):
            x = b(x)
            if upto == i:
                return x
        return self.head(x)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class DenseHead(nn.Module):
    """convlens' dense head: Dense(256, ReLU) -> Dropout(0.5) -> Dense(classes)."""

    def __init__(self, features, classes):
        super().__init__()
        self.dense = nn.Linear(features, 256)
        self.out = nn.Linear(256, classes)

    def forward(self, x):
        return self.out(F.dropout(F.relu(self.dense(x)), 0.5, self.training))


# ---------------------------------------------------------------------------- measuring


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def load1():
    return os.getloadavg()[0]


def timed(warm, runs, f):
    for _ in range(warm):
        f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


RESULTS = {}


def record(name, secs, unit, items=1, load=None):
    conv = (lambda s: s * 1e3) if unit == "ms" else (lambda s: items / s)
    runs = [conv(s) for s in secs]
    med = conv(sorted(secs)[len(secs) // 2])
    RESULTS[name] = {
        "median": med,
        "unit": unit,
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
        "load1": load,
    }
    print(f"{name}: {med:.2f} {unit}", file=sys.stderr)


def measure(name, unit, warm, runs, f, items=1):
    reset_peak_rss()
    load = load1()
    record(name, timed(warm, runs, f), unit, items, load)


def synthetic(batch, size):
    n = batch * 3 * size * size
    return torch.from_numpy(np.sin(np.arange(n, dtype=np.float32) * np.float32(0.618))).reshape(
        batch, 3, size, size
    )


def preprocess_center(path):
    """The fixtures README's eval preprocessing (shorter side 256, centre crop 224)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    nw, nh = (256, round(256 * h / w)) if w == s else (round(256 * w / h), 256)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - 224) / 2)), int(round((nh - 224) / 2))
    img = img.crop((left, top, left + 224, top + 224))
    return to_tensor(img)


def to_tensor(img):
    x = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1).copy())


def folder_images(folder):
    files = sorted(Path(folder).glob("c*/*.jpg"))
    if not files:
        sys.exit(f"no JPEGs in {folder}: run the convlens suite first (it makes them)")
    return files


def load_train(path):
    """convlens' TrainTransform: the whole image resized to 224x224 (PIL bilinear), normalised."""
    return to_tensor(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR))


# ---------------------------------------------------------------------------- workloads


def finetune_step(net, frozen, trainable, features, batch=16):
    """One fine-tuning step as convlens' trainer runs it: `frozen` (modules applied in order)
    without autograd, then `trainable` (their parameters trained), the global average pool and
    a fresh dense head on 10 classes; cross entropy, AdamW lr 1e-5, weight decay 0.01. BatchNorm
    in eval mode (running statistics), as convlens folds it."""
    head = DenseHead(features, 10).train()
    for p in net.parameters():
        p.requires_grad_(False)
    params = list(head.parameters())
    for m in trainable:
        for p in m.parameters():
            p.requires_grad_(True)
            params.append(p)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    x = synthetic(batch, 224)
    labels = torch.arange(batch) % 10

    def step():
        with torch.no_grad():
            h = x
            for m in frozen:
                h = m(h)
        for m in trainable:
            h = m(h)
        loss = F.cross_entropy(head(h.mean((2, 3))), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def ascent_step(features, imgs, border=2, step_size=10.0):
    """One step of convlens' filters ascent (`viz::filters`, chollet preset): image i towards
    channel i of `features(x)` without a `border`, the gradient L2-normalised per image."""
    n = imgs.shape[0]
    x = imgs.clone().requires_grad_(True)
    act = features(x)[:, :, border:-border, border:-border]
    per_image = act[torch.arange(n), torch.arange(n)].mean((1, 2))
    (g,) = torch.autograd.grad(per_image.sum(), x)
    g = g / (g.pow(2).sum((1, 2, 3), keepdim=True).sqrt() + 1e-8)
    return per_image.detach(), (x.detach() + step_size * g)


# The dense networks of issue #15: torchvision's, random weights (seeded), eval mode; ONNX
# Runtime runs the same model exported with a dynamic batch axis (cached in the temp dir).
DENSE = {"vgg16_b32": "vgg16", "resnet50_b32": "resnet50", "resnet18_b32": "resnet18"}


def dense_onnx(arch, model, x):
    """The ONNX file of torchvision's `arch` with seed-0 weights, exported once."""
    path = Path(tempfile.gettempdir()) / "convlens-ref-onnx" / f"{arch}-torch{torch.__version__}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        torch.onnx.export(
            model, (x[:1],), str(tmp), input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
        )
        tmp.rename(path)
    return path


def dense_forwards(want, q, threads):
    import torchvision

    for name, arch in DENSE.items():
        if not want(name):
            continue
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        x = synthetic(32, 224)
        with torch.no_grad():
            measure(f"torch.{name}", "img/s", 1, q(3, 1), lambda: model(x), 32)
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(dense_onnx(arch, model, x)), so,
                                        providers=["CPUExecutionProvider"])
            a = x.numpy()
            measure(f"ort.{name}", "img/s", 1, q(3, 1), lambda: sess.run(None, {"x": a})[0], 32)
            del sess
        except ImportError as e:
            print(f"onnxruntime unavailable: {e}", file=sys.stderr)
        del model


# Untimed steps before the dense backward workloads are timed. PyTorch's first steps are slow
# (allocator and oneDNN primitives warming up): on the Zen 5 EPYC (2026-12-03) the ResNet-50
# fine-tuning step ran 2,677, 1,526, 1,160, 876, 955 ms and the VGG-16 ascent step 858, 1,013,
# 616, 547, 513 ms in its first five. One warm-up step timed the second and third, 15-40 % over
# what it then settles to, which flattered convlens' ratio. The suite warms up as many.
DENSE_BACKWARD_WARM = 3


def dense_backwards(want, q):
    """The backward of the dense networks (issue #15), torchvision's models with seeded random
    weights: a ResNet-50 fine-tuning step (batch 16, `layer4` + a dense head) and a VGG-16 filters
    ascent step (8 images of 128 px, filters 0..8 of `features.28`, the last convolution + ReLU)."""
    import torchvision

    if want("resnet50_finetune_layer4_b16"):
        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None).eval()
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        step = finetune_step(net, [stem, net.layer1, net.layer2, net.layer3], [net.layer4], 2048)
        measure("torch.resnet50_finetune_layer4_b16", "ms", DENSE_BACKWARD_WARM, q(5, 2), step)
    if want("vgg16_ascent_128"):
        torch.manual_seed(0)
        vgg = torchvision.models.vgg16(weights=None).eval()
        for p in vgg.parameters():
            p.requires_grad_(False)
        upto = vgg.features[:30]
        imgs = synthetic(8, 128) * 0.2
        measure(
            "torch.vgg16_ascent_128",
            "ms",
            DENSE_BACKWARD_WARM,
            q(5, 2),
            lambda: ascent_step(upto, imgs),
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "convlens-bench-folder"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("PERF_THREADS", "2")))
    ap.add_argument("--impls", help="Score-CAM only: which of torch,jit,ort,ort_shared to run")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    want = lambda w: only is None or w in only  # noqa: E731
    q = lambda full, quick: quick if args.quick else full  # noqa: E731
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    sd = load_file(str(WEIGHTS))
    model = Lite0(sd).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x1, x32 = synthetic(1, 224), synthetic(32, 224)

    jit = None
    if any(want(w) for w in ("fwd_b1", "fwd_b32", "extract_folder", "scorecam")):
        with torch.no_grad():
            jit = torch.jit.optimize_for_inference(torch.jit.trace(model, x1).eval())
            for _ in range(3):
                jit(x1), jit(x32[:4])  # let the profiling executor settle

    ort_sess = None
    try:
        import onnxruntime as ort

        path = os.path.join(tempfile.mkdtemp(), "lite0.onnx")
        torch.onnx.export(
            model, (x1,), path, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        ort_sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        ort_run = lambda x: ort_sess.run(None, {"x": x})[0]  # noqa: E731
    except Exception as e:  # noqa: BLE001
        print(f"onnxruntime unavailable: {e}", file=sys.stderr)

    with torch.no_grad():
        if want("fwd_b1"):
            measure("torch.fwd_b1", "ms", 3, q(31, 10), lambda: model(x1))
            measure("jit.fwd_b1", "ms", 3, q(31, 10), lambda: jit(x1))
            if ort_sess:
                a = x1.numpy()
                measure("ort.fwd_b1", "ms", 3, q(31, 10), lambda: ort_run(a))
        if want("fwd_b32"):
            measure("torch.fwd_b32", "img/s", 1, q(7, 3), lambda: model(x32), 32)
            measure("jit.fwd_b32", "img/s", 1, q(7, 3), lambda: jit(x32), 32)
            if ort_sess:
                a = x32.numpy()
                measure("ort.fwd_b32", "img/s", 1, q(7, 3), lambda: ort_run(a), 32)

    if want("extract_folder"):
        files = folder_images(args.folder)

        def extract(run):
            out = []
            for i in range(0, len(files), 32):
                x = torch.stack([load_train(f) for f in files[i : i + 32]])
                out.append(run(x))
            return out

        with torch.no_grad():
            measure("torch.extract_folder", "img/s", 0, q(2, 1),
                    lambda: extract(lambda x: model.features(x).mean((2, 3))), len(files))
            if ort_sess:
                measure("ort.extract_folder", "img/s", 0, q(2, 1),
                        lambda: extract(lambda x: ort_run(x.numpy())), len(files))

    # Fine-tuning: BatchNorm in eval mode (running statistics), as convlens folds it; the frozen
    # part runs without autograd. AdamW lr 1e-5, weight decay 0.01, dense head on 10 classes.
    for name, first in (("finetune_top_b16", 15), ("finetune_all_b16", None)):
        if not want(name):
            continue
        net = Lite0(sd).eval()
        if first is None:
            frozen, trainable = (), [net.stem] + list(net.blocks) + [net.head]
        else:
            frozen = [net.stem] + list(net.blocks[:first])
            trainable = list(net.blocks[first:]) + [net.head]
        measure(f"torch.{name}", "ms", 1, q(7, 3), finetune_step(net, frozen, trainable, 1280))

    if want("head_epoch"):
        n = 1600
        feats = 2.0 * (torch.sin(torch.arange(n * 1280, dtype=torch.float32) * 0.377) + 1.0)
        feats = feats.reshape(n, 1280)
        labels = torch.arange(n) % 10
        head = DenseHead(1280, 10).train()
        opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)

        def epoch():
            for s in range(0, n, 32):
                loss = F.cross_entropy(head(feats[s : s + 32]), labels[s : s + 32])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()

        measure("torch.head_epoch", "ms", 1, q(5, 2), epoch)

    xc = preprocess_center(CHELSEA)[None]

    def finish_cam(cam):
        cam = cam.clamp(min=0)
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
        up = F.interpolate(cam[None, None], size=(224, 224), mode="bilinear", align_corners=False)
        up = up - up.min()
        return (up / (1e-7 + up.max()))[0, 0]

    if want("gradcam"):
        # pytorch-grad-cam's way: parameters require grad, a hook on the layer, backward of the
        # class logit through the whole graph.
        lib = Lite0(sd).eval()
        store = {}

        def fwd_hook(_m, _i, out):
            store["a"] = out
            out.register_hook(lambda g: store.__setitem__("g", g))

        lib.head.register_forward_hook(fwd_hook)

        def gradcam_lib():
            logits = lib(xc)
            c = int(logits[0].argmax())
            lib.zero_grad()
            logits[0, c].backward()
            a, g = store["a"].detach()[0], store["g"][0]
            return finish_cam((g.mean((1, 2))[:, None, None] * a).sum(0)).numpy()

        measure("torch.gradcam", "ms", 3, q(15, 5), gradcam_lib)

        # The fast way (what convlens does): no autograd up to the layer, differentiate the
        # rest only.
        def gradcam_head():
            with torch.no_grad():
                a = model.features(xc)
            a.requires_grad_(True)
            logits = model.fc(a.mean((2, 3)))
            c = int(logits[0].argmax())
            (g,) = torch.autograd.grad(logits[0, c], a)
            return finish_cam((g[0].mean((1, 2))[:, None, None] * a.detach()[0]).sum(0)).numpy()

        measure("torch.gradcam_head_only", "ms", 3, q(15, 5), gradcam_head)

    if want("ascent_128_b10"):
        imgs = synthetic(10, 128) * 0.2
        measure("torch.ascent_128_b10", "ms", 2, q(15, 5),
                lambda: ascent_step(lambda x: model.features(x, upto=10), imgs))

    if want("scorecam"):
        # pytorch-grad-cam's ScoreCAM: upsampled (align_corners) min-max masks, batches of 16.
        # `shared`: one forward per distinct masked input, as convlens does it (channels with
        # bit-identical maps share one; constant channels share the all-zero mask).
        def mask_groups(a):
            flat = a.reshape(a.shape[0], -1)
            constant = (flat == flat[:, :1]).all(1).tolist()
            seen, reps, group = {}, [], []
            for ch, const in enumerate(constant):
                key = None if const else flat[ch].numpy().tobytes()
                if key not in seen:
                    seen[key] = len(reps)
                    reps.append(ch)
                group.append(seen[key])
            return reps, group

        def scorecam(run, shared=False):
            with torch.no_grad():
                a = model.features(xc)
                c = int(model.fc(a.mean((2, 3)))[0].argmax())
                reps, group = mask_groups(a[0]) if shared else (list(range(a.shape[1])), None)
                up = F.interpolate(a[:, reps], size=(224, 224), mode="bilinear",
                                   align_corners=True)[0]
                mn = up.amin((1, 2), keepdim=True)
                mx = up.amax((1, 2), keepdim=True)
                masks = (up - mn) / (mx - mn + 1e-8)
                scores = []
                for s in range(0, masks.shape[0], 16):
                    scores.append(run(xc * masks[s : s + 16, None])[:, c])
                scores = torch.cat(scores)
                if shared:
                    scores = scores[torch.tensor(group)]
                w = torch.softmax(scores, 0)
                return finish_cam((w[:, None, None] * a[0]).sum(0)).numpy()

        impls = set(args.impls.split(",")) if args.impls else {"torch", "jit", "ort", "ort_shared"}
        if "torch" in impls:
            measure("torch.scorecam", "ms", 0, q(2, 1), lambda: scorecam(model))
        if jit is not None and "jit" in impls:
            measure("jit.scorecam", "ms", 0, q(2, 1), lambda: scorecam(jit))
        if ort_sess and "ort" in impls:
            measure("ort.scorecam", "ms", 0, q(2, 1),
                    lambda: scorecam(lambda x: torch.from_numpy(ort_run(x.numpy()))))
        if ort_sess and "ort_shared" in impls:
            measure("ort_shared.scorecam", "ms", 0, q(2, 1),
                    lambda: scorecam(lambda x: torch.from_numpy(ort_run(x.numpy())), True))

    if want("lucid_step_grid16"):
        # lucent's `param.image(128, fft=True, decorrelate=True)`, `standard_transforms` (one
        # affine grid_sample per image: jitter 8, scale, rotate, jitter 4, padding 12 of 0.5),
        # the mean of filter f of blocks.4, Adam lr 0.05; filters 0..16 in batches of 8 (the
        # convlens default), 16 steps, time per step.
        size, pad, batch, steps = 128, 12, 8, 16
        out = size + 2 * pad - 12
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        spectrum_scale = (1.0 / (fx * fx + fy * fy).sqrt().clamp(min=1.0 / size) / 4.0)
        spectrum_scale = spectrum_scale[None, None, :, :, None]
        color = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
        color = color / color.norm(dim=0).max()
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.requires_grad_(False)

        def thetas(b):
            t = torch.zeros(b, 2, 3)
            for i in range(b):
                s = 1.0 + (int(torch.randint(11, (1,), generator=gen)) - 5) / 50.0
                a = math.radians(int(torch.randint(-10, 11, (1,), generator=gen)))
                j = torch.randint(-12, 13, (2,), generator=gen).float() / (size + 2 * pad)
                t[i] = torch.tensor([[math.cos(a) / s, -math.sin(a) / s, float(j[0])],
                                     [math.sin(a) / s, math.cos(a) / s, float(j[1])]])
            return t

        def lucid_grid():
            for first in range(0, 16, batch):
                filters = torch.arange(first, first + batch)
                spec = (torch.randn(batch, 3, size, size // 2 + 1, 2, generator=gen) * 0.01)
                spec.requires_grad_(True)
                opt = torch.optim.Adam([spec], lr=0.05)
                for _ in range(steps):
                    opt.zero_grad()
                    img = torch.fft.irfft2(torch.view_as_complex(spec * spectrum_scale),
                                           s=(size, size), norm="ortho")
                    img = torch.sigmoid(torch.einsum("ij,bjhw->bihw", color, img))
                    img = F.pad(img, (pad,) * 4, value=0.5)
                    grid = F.affine_grid(thetas(batch), (batch, 3, out, out), align_corners=False)
                    x = F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")
                    act = model.features((x - MEAN) / STD, upto=4)
                    loss = -act[torch.arange(batch), filters].mean((1, 2)).sum()
                    loss.backward()
                    opt.step()

        reset_peak_rss()
        load = load1()
        secs = timed(0, q(3, 1), lucid_grid)
        record("torch.lucid_step_grid16", [t / steps for t in secs], "ms", 1, load)

    dense_forwards(want, q, args.threads)
    dense_backwards(want, q)

    print(json.dumps({
        "impl": "reference",
        "torch": torch.__version__,
        "onnxruntime": getattr(sys.modules.get("onnxruntime"), "__version__", None),
        "threads": args.threads,
        "load1_end": load1(),
        "results": RESULTS,
    }, indent=1))


if __name__ == "__main__":
    main()
