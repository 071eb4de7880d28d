"""Train the shipped 28x28 feature classifiers (ddpmlab.metrics.features.SmallCNN), deterministically.

    python benchmarks/train_classifier.py --dataset mnist           # mnist-5k: 4000 train, 1000 held out
    python benchmarks/train_classifier.py --dataset fashion-mnist   # 60k train, 10k test (Debian IDX files)
    python benchmarks/train_classifier.py --dataset mnist-judge     # the 11-class judge (metrics/judge.py)

Writes src/ddpmlab/weights/{mnist,fashion_mnist}_cnn.safetensors (float32, ~1 MB) with metadata: dataset,
split, test accuracy, the settings below, torch version. One thread, fixed seeds, explicit generators and
torch.use_deterministic_algorithms: rerunning with the same torch build on the same kind of CPU reproduces
the file bit for bit (the script prints its sha256 so this can be checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from ddpmlab.io import atomic_write
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.metrics.features import CLASSIFIER_FILES, SmallCNN, mnist_5k_heldout
from ddpmlab.metrics.judge import JUDGE_FILES

# mnist-5k is sorted by label (500 per digit), so "the last 1000 images" would be only 8s and 9s.
MNIST_TEST = "mnist-5k, the last 100 images of each digit (1000)"

# Per-dataset settings; everything that shapes the weights is here and lands in the file's metadata.
SETTINGS = {
    "mnist": {"source": "mnist-5k", "train": "mnist-5k minus test (4000)", "test": MNIST_TEST, "epochs": 20,
              "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4, "warmup_steps": 100, "shift": 2, "seed": 0},
    "fashion-mnist": {"source": "fashion-mnist", "train": "train (60000)", "test": "test (10000)", "epochs": 3,
                      "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4, "warmup_steps": 100, "shift": 0,
                      "seed": 0},
    # the judge: the mnist split less a calibration split; each batch 64 augmented real digits and 32 negatives
    "mnist-judge": {"source": "mnist-5k", "train": "mnist-5k minus test minus calibration (3500) + generated "
                    "negatives", "calibration": "the last 50 of each digit of the mnist training split (500)",
                    "test": MNIST_TEST, "epochs": 24, "batch_size": 64, "negatives_per_batch": 32, "lr": 2e-3,
                    "weight_decay": 5e-4, "warmup_steps": 100, "calibration_share": 0.93, "seed": 0},
}


def splits(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test), images (N, 1, 28, 28) in [-1, 1]."""
    if name == "mnist":
        d = load_dataset(DataConfig(name="mnist-5k"), "train")
        test = mnist_5k_heldout(d.y)
        return d.x[~test], d.y[~test], d.x[test], d.y[test]
    tr, te = load_dataset(DataConfig(name="fashion-mnist"), "train"), load_dataset(DataConfig(name="fashion-mnist"), "test")
    return tr.x, tr.y, te.x, te.y


def canonical_safetensors(blob: bytes) -> bytes:
    """The same file with its JSON header re-serialised with sorted keys.

    safetensors writes the header (tensor entries and __metadata__) from a hash map, so its key order, and
    hence the file's bytes, changes from process to process; sorting makes equal weights give equal files.
    """
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data section stays 8-byte aligned
    return struct.pack("<Q", len(header)) + header + blob[8 + n :]


def random_shift(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to k pixels in x and y (zero = background -1 padding)."""
    if k == 0:
        return x
    pad = F.pad(x, (k, k, k, k), value=-1.0)
    off = torch.randint(0, 2 * k + 1, (len(x), 2), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(off.tolist())])


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(b).argmax(1) for b in x.split(1000)])
    return float((pred == y).double().mean())


def train(name: str, out: Path) -> None:
    s = SETTINGS[name]
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    x_tr, y_tr, x_te, y_te = splits(name)
    net = SmallCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    steps_per_epoch = math.ceil(len(x_tr) / s["batch_size"])
    total = s["epochs"] * steps_per_epoch

    def lr_at(step: int) -> float:  # linear warmup, then cosine decay to 0
        if step < s["warmup_steps"]:
            return s["lr"] * (step + 1) / s["warmup_steps"]
        return s["lr"] * 0.5 * (1 + math.cos(math.pi * (step - s["warmup_steps"]) / (total - s["warmup_steps"])))

    t0, step = time.perf_counter(), 0
    for epoch in range(s["epochs"]):
        net.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for idx in perm.split(s["batch_size"]):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(net(random_shift(x_tr[idx], s["shift"], gen)), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        print(f"epoch {epoch + 1}/{s['epochs']}: last loss {loss.item():.4f}, test accuracy "
              f"{accuracy(net, x_te, y_te):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    acc = accuracy(net, x_te, y_te)
    with torch.no_grad():  # unit average feature variance on the training images (see SmallCNN.feature_scale)
        h = torch.cat([net.hidden(b) for b in x_tr.split(1000)]).double()
        net.feature_scale.fill_(float(h.var(dim=0).mean().sqrt()))
    from safetensors.torch import save

    meta = {"dataset": name, "train_split": s["train"], "test_split": s["test"], "test_accuracy": f"{acc:.4f}",
            "test_images": str(len(x_te)), "settings": json.dumps(s, sort_keys=True), "torch": torch.__version__,
            "script": "benchmarks/train_classifier.py", "architecture": "ddpmlab.metrics.features.SmallCNN",
            "feature_scale": f"{float(net.feature_scale):.6g}", "format": "pt"}
    blob = canonical_safetensors(save({k: v.detach().contiguous() for k, v in net.state_dict().items()}, metadata=meta))
    atomic_write(out, lambda f: f.write(blob))
    os.chmod(out, 0o644)  # a package data file, not a private temp file
    print(f"{name}: test accuracy {acc:.4f} on {len(x_te)} held-out images; wrote {out} ({len(blob) / 1e6:.2f} MB, "
          f"sha256 {hashlib.sha256(blob).hexdigest()}) in {time.perf_counter() - t0:.0f} s")


def lr_schedule(s: dict, total: int) -> Callable[[int], float]:
    """step -> learning rate: linear warmup, then cosine decay to 0."""
    def lr_at(step: int) -> float:
        if step < s["warmup_steps"]:
            return s["lr"] * (step + 1) / s["warmup_steps"]
        return s["lr"] * 0.5 * (1 + math.cos(math.pi * (step - s["warmup_steps"]) / (total - s["warmup_steps"])))

    return lr_at


@torch.no_grad()
def judge_numbers(net: torch.nn.Module) -> dict[str, float]:
    """Held-out numbers of a judge: 10-way accuracy, recognizable share on real digits, noise and negatives."""
    from ddpmlab.metrics.judge import Judge

    net.eval()
    c = Judge("mnist", net).calibration()
    return {k: v for k, v in c.items() if not isinstance(v, dict)} | {
        f"negatives_share_{k}": v for k, v in c["negatives_share_by_kind"].items()}


@torch.no_grad()
def calibrate(net: torch.nn.Module, x_cal: torch.Tensor, share: float) -> float:
    """The smallest reject bias on a grid of 0.25 (at most 12) at which `share` of x_cal is recognizable."""
    from ddpmlab.metrics.judge import REJECT, judge_probs, verdicts

    net.eval()
    for k in range(49):
        net.reject_bias.fill_(0.25 * k)
        got = float((verdicts(judge_probs(net, x_cal)) < REJECT).double().mean())
        if got >= share:
            break
    print(f"calibration: reject bias {0.25 * k:g} makes {got:.4f} of {len(x_cal)} calibration digits recognizable")
    return 0.25 * k


def train_judge(s: dict, out: Path) -> None:
    """Train the 11-class judge: each step 64 augmented real digits and 64 fresh negatives built from them."""
    from ddpmlab.metrics.judge import REJECT, JudgeCNN
    from ddpmlab.metrics.negatives import augment_digits, make_negatives

    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    x_tr, y_tr, _, _ = splits("mnist")  # the held-out digits are read again by judge_numbers
    cal = mnist_5k_heldout(y_tr, per_class=50)
    x_cal, x_tr, y_tr = x_tr[cal], x_tr[~cal], y_tr[~cal]
    net = JudgeCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    total = s["epochs"] * math.ceil(len(x_tr) / s["batch_size"])
    lr_at, t0, step = lr_schedule(s, total), time.perf_counter(), 0
    for epoch in range(s["epochs"]):
        net.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(s["batch_size"]):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            neg, _ = make_negatives(x_tr, y_tr, s["negatives_per_batch"], gen)
            x = torch.cat([augment_digits(x_tr[idx], gen), neg])
            y = torch.cat([y_tr[idx], torch.full((len(neg),), REJECT, dtype=torch.long)])
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if (epoch + 1) % 4 == 0 or epoch + 1 == s["epochs"]:
            m = judge_numbers(net)
            print(f"epoch {epoch + 1}/{s['epochs']}: last loss {loss.item():.4f}, accuracy {m['real_accuracy']:.4f}, "
                  f"share real {m['real_share']:.4f} noise {m['noise_share']:.4f} negatives "
                  f"{m['negatives_share']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_judge(net, x_cal, s, out, t0)


def write_judge(net: torch.nn.Module, x_cal: torch.Tensor, s: dict, out: Path, t0: float) -> None:
    """Calibrate the trained judge's reject bias, measure it on held-out data and write its safetensors file."""
    net.reject_bias.fill_(calibrate(net, x_cal, s["calibration_share"]))
    m = judge_numbers(net)
    from safetensors.torch import save

    meta = {"dataset": "mnist-judge", "train_split": s["train"], "test_split": s["test"],
            "classes": "0-9, 10 = not a digit", "settings": json.dumps(s, sort_keys=True), "torch": torch.__version__,
            "script": "benchmarks/train_classifier.py",
            "architecture": "ddpmlab.metrics.judge.JudgeCNN", "format": "pt",
            "reject_bias": f"{float(net.reject_bias):.4g}",
            **{k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in m.items()}}
    blob = canonical_safetensors(save({k: v.detach().contiguous() for k, v in net.state_dict().items()}, metadata=meta))
    atomic_write(out, lambda f: f.write(blob))
    os.chmod(out, 0o644)
    print(f"judge: {json.dumps(m)}\nwrote {out} ({len(blob) / 1e3:.0f} kB, sha256 {hashlib.sha256(blob).hexdigest()}) "
          f"in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(SETTINGS), required=True)
    ap.add_argument("--out", help="default: src/ddpmlab/weights/<name>_cnn.safetensors (mnist_judge.safetensors)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    weights = Path(__file__).resolve().parents[1] / "src/ddpmlab/weights"
    if args.dataset == "mnist-judge":
        train_judge(SETTINGS["mnist-judge"], Path(args.out) if args.out else weights / JUDGE_FILES["mnist"])
        return
    out = Path(args.out) if args.out else weights / CLASSIFIER_FILES[args.dataset]
    train(args.dataset, out)


if __name__ == "__main__":
    main()
