"""The bad-input catalogue: every case through the real CLI in a subprocess.

Each must exit 2 (user mistake) or 1 (runtime failure) with a one-line message naming the problem,
print no traceback, and leave every existing file in the run directories unchanged.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ddpmlab.cli import main

TINY = ["--set", "model.channels=8", "--set", "model.channel_mults=[1, 2]", "--set", "model.attention_resolutions=[]",
        "--set", "diffusion.T=50", "--set", "sample.steps=5", "--set", "train.batch_size=8", "--quiet"]

# (argv with placeholders, expected exit code, text the one-line message must contain)
CASES = [
    (["train", "--preset", "nope"], 2, "unknown preset 'nope'"),
    (["train", "--preset", "mnist", "--data", "imagenet"], 2, "unknown dataset 'imagenet'"),
    (["train", "--preset", "mnist", "--set", "diffusion.schedule=zigzag"], 2, "diffusion.schedule must be one of"),
    (["forward", "--schedule", "zigzag"], 2, "unknown schedule 'zigzag'"),
    (["sample", "{IMG}", "--sampler", "magic"], 2, "unknown sampler 'magic'"),
    (["train", "--config", "{BAD_TOML}"], 2, "is not valid TOML"),
    (["train", "--config", "{TMP}/missing.toml"], 2, "not found"),
    (["train", "--preset", "mnist", "--set", "model.widht=3"], 2, "unknown setting model.widht"),
    (["train", "--preset", "mnist", "--set", "train.steps=abc"], 2, "train.steps must be an integer"),
    (["train", "--preset", "mnist", "--set", "train.steps"], 2, "--set needs SECTION.KEY=VALUE"),
    (["train", "--preset", "mnist", "--set", "train.lr=nan"], 2, "train.lr must be a finite number"),
    (["train", "--preset", "mnist", "--set", "train.lr=-1e-3"], 2, "train.lr must be positive"),
    (["train", "--preset", "mnist", "--set", "train.batch_size=0"], 2, "train.batch_size must be positive"),
    (["train", "--preset", "mnist", "--set", "train.ema_decay=1.5"], 2, "train.ema_decay must lie in [0, 1)"),
    (["train", "--preset", "mnist", "--steps", "0"], 2, "must be at least 1"),
    (["train", "--preset", "mnist", "--set", "sample.steps=5000"], 2, "cannot exceed diffusion.T"),
    (["train", "--preset", "moons", "--set", "diffusion.T=15", "--set", "sample.steps=15"], 2,
     "beta_T = 1.33 (0.02 x 1000 / T at T=15) must be below 1"),
    (["train", "--preset", "moons", "--set", "diffusion.beta_end=1.0"], 2, "set diffusion.beta_end below 1"),
    (["train", "--preset", "mnist", "--set", "model.channel_mults=[1,2,2,2]"], 2, "cannot be halved"),
    (["train", "--preset", "mnist", "--data", "folder:{EMPTY}"], 2, "holds no images"),
    (["train", "--preset", "mnist", "--data", "folder:{TMP}/nowhere"], 2, "does not exist"),
    (["train", "--preset", "mnist", "--data", "folder:{CORRUPT}"], 2, "could be read as an image"),
    (["train", "--preset", "mnist", "--data", "folder:{MIXED}"], 2, "different sizes; pass --image-size"),
    (["train", "--preset", "mnist", "--data", "mnist", "--data-root", "{TMP}/data"], 2, "use --data mnist-5k"),
    (["train", "--preset", "mnist", "--out", "{IMG}"], 2, "already holds a run"),
    (["train", "--preset", "mnist", "--resume", "{IMG}"], 2, "--resume takes the run's own config"),
    (["train", "--resume", "{PLAIN}"], 2, "not a ddpmlab run"),
    (["train", "--resume", "{FILE}"], 2, "is a file"),
    (["train", "--resume", "{FOREIGN_STATE}"], 2, "does not belong to this run"),
    (["sample", "{NO_WEIGHTS}"], 2, "no saved weights"),
    (["sample", "{TRUNCATED}"], 2, "it may be truncated"),
    (["sample", "{IMG}", "--n", "0"], 2, "--n must be at least 1"),
    (["sample", "{IMG}", "--n", "-5"], 2, "--n must be at least 1"),
    (["sample", "{IMG}", "--steps", "-3"], 2, "--steps must be at least 1"),
    (["sample", "{IMG}", "--steps", "500"], 2, "cannot exceed diffusion.T"),
    (["sample", "{IMG}", "--guidance", "2"], 2, "needs a class-conditional run"),
    (["sample", "{IMG}", "--class", "3"], 2, "needs a class-conditional run"),
    (["sample", "{COND}", "--class", "7"], 2, "outside [0, 2)"),
    (["sample", "{COND}", "--guidance", "-1"], 2, "sample.guidance must not be negative"),
    (["sample", "{IMG}", "--out", "{TMP}/no/such/dir/x.png"], 2, "does not exist"),
    (["sample", "{IMG}", "--out", "/proc/ddpmlab/x.png"], 2, "does not exist"),
    (["edit", "{IMG}", "--image", "{TMP}/missing.png"], 2, "does not exist"),
    (["edit", "{IMG}", "--image", "{BAD_TOML}"], 2, "could not be read as an image"),
    (["edit", "{IMG}", "--image", "{PIC}", "--strength", "1.5"], 2, "--strength must lie in (0, 1]"),
    (["inpaint", "{IMG}", "--image", "{PIC}", "--mask", "{SMALL_MASK}"], 2, "mask is 8x8 but the image is 16x16"),
    (["inpaint", "{IMG}", "--image", "{PIC}", "--mask", "{BLACK_MASK}"], 2, "has no white pixels"),
    (["interpolate", "{IMG}", "--frames", "1"], 2, "--frames must be at least 2"),
    (["invert", "{MOONS}", "--image", "{PIC}"], 2, "editing needs an image run"),
]


def _snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    imgs = tmp / "imgs"
    imgs.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(imgs / f"{i}.png")
    classes = tmp / "classes"
    for c in ("a", "b"):
        (classes / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(classes / c / f"{i}.png")
    p = {"TMP": tmp, "IMG": tmp / "img", "COND": tmp / "cond", "MOONS": tmp / "moons"}
    assert main(["train", "--preset", "mnist", "--data", f"folder:{imgs}", "--steps", "3", "--out", str(p["IMG"]),
                 *TINY]) == 0
    assert main(["train", "--preset", "mnist-cond", "--data", f"folder:{classes}", "--set", "model.num_classes=2",
                 "--steps", "3", "--out", str(p["COND"]), *TINY]) == 0
    assert main(["train", "--preset", "moons", "--steps", "3", "--out", str(p["MOONS"]), "--quiet"]) == 0
    for name in ("EMPTY", "CORRUPT", "MIXED", "PLAIN", "NO_WEIGHTS", "TRUNCATED", "FOREIGN_STATE"):
        p[name] = tmp / name.lower()
        p[name].mkdir()
    (p["CORRUPT"] / "a.png").write_bytes(b"junk")
    (p["CORRUPT"] / "b.jpg").write_bytes(b"\xff\xd8 not really")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(p["MIXED"] / "a.png")
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(p["MIXED"] / "b.png")
    (p["PLAIN"] / "notes.txt").write_text("keep me")
    for name in ("config.toml", "meta.json"):
        (p["NO_WEIGHTS"] / name).write_bytes((p["IMG"] / name).read_bytes())
        (p["TRUNCATED"] / name).write_bytes((p["IMG"] / name).read_bytes())
    (p["TRUNCATED"] / "ema.safetensors").write_bytes((p["IMG"] / "ema.safetensors").read_bytes()[:300])
    for name in ("config.toml", "meta.json", "model.safetensors", "ema.safetensors", "metrics.csv"):
        (p["FOREIGN_STATE"] / name).write_bytes((p["IMG"] / name).read_bytes())
    (p["FOREIGN_STATE"] / "state.pt").write_bytes((p["MOONS"] / "state.pt").read_bytes())
    p["FILE"] = tmp / "afile"
    p["FILE"].write_text("x")
    p["BAD_TOML"] = tmp / "bad.toml"
    p["BAD_TOML"].write_text("[train\nsteps = = 3\n")
    p["PIC"] = tmp / "pic.png"
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(p["PIC"])
    p["SMALL_MASK"] = tmp / "small_mask.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(p["SMALL_MASK"])
    p["BLACK_MASK"] = tmp / "black_mask.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(p["BLACK_MASK"])
    return {k: str(v) for k, v in p.items()}


def _run(argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    if "mnist" in argv and "--data" in argv and argv[argv.index("--data") + 1] == "mnist":
        # MNIST downloads go nowhere, fast: the real torchvision code path, offline.
        code = ("import torchvision.datasets as d, sys; d.MNIST.mirrors = ['http://127.0.0.1:9/'];"
                "from ddpmlab.cli import main; sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                              timeout=180)
    return subprocess.run([sys.executable, "-m", "ddpmlab", *argv], capture_output=True, text=True, env=env,
                          timeout=180)


def test_catalogue_has_at_least_30_cases():
    assert len(CASES) >= 30


def test_every_bad_input_is_one_clear_line(places):
    from pathlib import Path

    runs = [Path(places[k]) for k in ("IMG", "COND", "MOONS", "PLAIN", "NO_WEIGHTS", "TRUNCATED", "FOREIGN_STATE")]
    before = {r: _snapshot(r) for r in runs}
    argvs = [[a.format(**places) for a in argv] for argv, _, _ in CASES]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_run, argvs))
    failures = []
    for (argv, code, text), proc in zip(CASES, results):
        err = proc.stderr.strip()
        lines = [line for line in err.splitlines() if not line.startswith("ddpmlab: warning:")]
        ok = (proc.returncode == code and len(lines) == 1 and text in lines[0] and "Traceback" not in err)
        if not ok:
            failures.append(f"{' '.join(argv)} -> exit {proc.returncode}: {err[-400:]}")
    assert not failures, "\n".join(failures)
    assert {r: _snapshot(r) for r in runs} == before
