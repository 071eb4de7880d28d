"""The bad-input catalogue: every case through the real CLI (in this process; the MNIST-download ones in a
subprocess, where the download mirror is redirected).

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

from helpers import TINY_CLI_RUN, UNGUIDED, cli_sets, fake_encoder_dir

TINY = [*cli_sets(*TINY_CLI_RUN), "--quiet"]

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
    (["sample", "{IMG}", "--n", "0"], 2, "argument --n: must be at least 1"),
    (["sample", "{IMG}", "--n", "-5"], 2, "argument --n: must be at least 1"),
    (["sample", "{IMG}", "--steps", "-3"], 2, "argument --steps: must be at least 1"),
    (["sample", "{IMG}", "--steps", "500"], 2, "cannot exceed diffusion.T"),
    (["sample", "{IMG}", "--guidance", "2"], 2, "needs a class-conditional run"),
    (["sample", "{IMG}", "--class", "3"], 2, "needs a class-conditional run"),
    (["sample", "{COND}", "--class", "7"], 2, "outside [0, 2)"),
    (["sample", "{COND}", "--guidance", "-1"], 2, "sample.guidance (--guidance) must not be negative"),
    # options the chosen sampler or command would not use are refused, never silently dropped
    (["sample", "{IMG}", "--sampler", "euler", "--eta", "0.5"], 2, "sample.eta (--eta) = 0.5 applies only to ddim"),
    (["sample", "{IMG}", "--sampler", "ddim", "--churn", "1"], 2, "sample.s_churn (--churn) = 1.0 applies only to heun"),
    (["sample", "{IMG}", "--sampler", "dpmpp-2m", "--variance", "beta"], 2,
     "sample.variance (--variance) = 'beta' applies only to ddpm"),
    (["sample", "{IMG}", "--eta", "0.3"], 2, "applies only to ddim; sampler ddpm takes variance"),
    (["train", "--resume", "{IMG}", "--out", "{TMP}/other"], 2, "--resume takes the run's own config and directory; "
     "drop --out"),
    (["sample", "{COND}", "--guidance-sweep", "0,1", "--class", "1"], 2, "draws a row for every class; drop --class"),
    (["sample", "{COND}", "--guidance-sweep", "0,1", "--n", "100"], 2, "images per class and weight: 1 to 32"),
    (["train", "--preset", "mnist", "--set", "diffusion.a=0.5"], 2, "diffusion.a applies only to the geometric"),
    (["train", "--preset", "mnist", "--set", "sample.eta=0.5"], 2, "sample.eta = 0.5 applies only to ddim"),
    (["sample", "{IMG}", "--out", "{TMP}/no/such/dir/x.png"], 2, "does not exist"),
    (["sample", "{IMG}", "--out", "/proc/ddpmlab/x.png"], 2, "does not exist"),
    (["edit", "{IMG}", "--image", "{TMP}/missing.png"], 2, "does not exist"),
    (["edit", "{IMG}", "--image", "{BAD_TOML}"], 2, "could not be read as an image"),
    (["edit", "{IMG}", "--image", "{PIC}", "--strength", "1.5"], 2, "--strength must lie in (0, 1]"),
    (["inpaint", "{IMG}", "--image", "{PIC}", "--mask", "{SMALL_MASK}"], 2, "mask is 8x8 but the image is 16x16"),
    (["inpaint", "{IMG}", "--image", "{PIC}", "--mask", "{BLACK_MASK}"], 2, "has no white pixels"),
    (["interpolate", "{IMG}", "--frames", "1"], 2, "--frames must be at least 2"),
    (["invert", "{MOONS}", "--image", "{PIC}"], 2, "editing needs an image run"),
    # text conditioning (the rest of the text cases run in-process: TEXT_CASES)
    (["sample", "{IMG}", "--prompt", "a cat"], 2, "--prompt needs a text-conditional run"),
    (["sample", "{TEXT}", "--class", "1"], 2, "is text-conditional: use --prompt"),
    (["train", "--preset", "mnist", "--data", "folder:{ORPHAN}", "--out", "{TMP}/orphan_run"], 2, "matches no image"),
]


# Text-conditioning mistakes, through main() in this process (no torch import per case; same checks).
TEXT_CASES = [
    (["sample", "{COND}", "--prompt", "a cat"], 2, "trained with class labels: use --class"),
    (["edit", "{IMG}", "--image", "{PIC}", "--prompt", "a cat"], 2, "--prompt needs a text-conditional run"),
    (["interpolate", "{TEXT}", "--class", "1"], 2, "is text-conditional: use --prompt"),
    (["sample", "{TEXT}", "--prompt", "", "--prompt", "a cat"], 2, "an empty --prompt is the null prompt"),
    (["sample", "{TEXT}", "--guidance", "2"], 2, "needs a prompt to guide towards"),
    (["sample", "{TEXT}", "--prompt", "a", "--prompt", "b", "--n", "3"], 2, "does not split into 2 prompt rows"),
    (["sample", "{TEXT}", "--prompts-file", "{TMP}/missing.txt"], 2, "--prompts-file"),
    (["sample", "{TEXT}", "--prompt", "a", "--text-encoder", "{TMP}/nowhere"], 2, "does not exist"),
    (["sample", "{TEXT}", "--prompt", "a", "--text-encoder", "{BROKEN_ENC}"], 2, "model.safetensors is missing"),
    (["sample", "{TEXT}", "--prompt", "a", "--text-encoder", "{WIDE_ENC}"], 2, "set model.context_dim = 24"),
    (["sample", "{IMG}", "--text-encoder", "{ENC}"], 2, "--text-encoder needs a text-conditional run"),
    (["eval", "{IMG}", "--per-prompt", "2"], 2, "--per-prompt applies only to eval --prompts"),
    (["eval", "{IMG}", "--prompts", "eval"], 2, "--prompts needs a text-conditional run"),
    (["eval", "{TEXT}", "--prompts", "eval", "--features", "classifier"], 2, "does not apply to eval --prompts"),
    (["train", "--preset", "mnist", "--set", "data.captions=templates"], 2, "needs a text-conditional model"),
    (["train", "--preset", "emoji-text", "--set", "model.num_classes=9"], 2, "cannot both be set"),
    (["train", "--preset", "fashion-mnist-text", "--data", "moons"], 2, 'data.captions = "templates" needs one of'),
    (["train", "--preset", "mnist", "--data", "folder:{CAPTIONED}", "--set", "model.context_dim=24",
      "--set", "data.clusters=0", "--set", "model.text_encoder={ENC}", "--out", "{TMP}/new"], 2,
     "set model.context_dim = 16"),
    (["train", "--preset", "mnist", "--set", "model.context_dim=16", "--set", "data.clusters=0",
      "--set", "model.text_encoder={ENC}", "--out", "{TMP}/new2"], 2, "has no captions for a text-conditional run"),
    (["train", "--preset", "mnist", "--set", "model.context_dim=16"], 2, "set data.clusters = 0"),
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
    p = {"TMP": tmp, "IMG": tmp / "img", "COND": tmp / "cond", "MOONS": tmp / "moons", "TEXT": tmp / "text"}
    p.update(_text_places(tmp, rng))
    assert main(["train", "--preset", "mnist", "--data", f"folder:{p['CAPTIONED']}", "--steps", "2", "--out",
                 str(p["TEXT"]), "--set", "model.context_dim=16", "--set", f"model.text_encoder={p['ENC']}", "--set", "data.clusters=0",
                 *TINY]) == 0
    assert main(["train", "--preset", "mnist", "--data", f"folder:{imgs}", "--steps", "3", "--out", str(p["IMG"]),
                 *TINY, *cli_sets(*UNGUIDED)]) == 0
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


def _text_places(tmp, rng):
    """A tiny encoder (and a broken and a wider copy), a captioned folder and one whose sidecar names no image."""
    import shutil

    enc = fake_encoder_dir(tmp / "enc")
    broken = tmp / "broken_enc"
    shutil.copytree(enc, broken)
    (broken / "model.safetensors").unlink()
    captioned, orphan = tmp / "captioned", tmp / "orphan"
    for folder in (captioned, orphan):
        folder.mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
            (folder / f"{i}.txt").write_text(("a red apple", "a blue car")[i % 2])
    (orphan / "missing.txt").write_text("no image is called missing.png")
    return {"ENC": enc, "BROKEN_ENC": broken, "WIDE_ENC": fake_encoder_dir(tmp / "wide_enc", hidden=24),
            "CAPTIONED": captioned, "ORPHAN": orphan}


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


def _run_here(argv, capsys):
    """main(argv) in this process, as (exit code, stderr); an exception escaping main is a failure with its trace."""
    import traceback
    from types import SimpleNamespace

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception:  # noqa: BLE001 - reported as the failure
        code = "raised"
        print(traceback.format_exc(), file=sys.stderr)
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def _in_subprocess(argv):
    return "mnist" in argv and "--data" in argv and argv[argv.index("--data") + 1] == "mnist"


def test_every_bad_input_is_one_clear_line(places, capsys):
    from pathlib import Path

    runs = [Path(places[k]) for k in ("IMG", "COND", "MOONS", "TEXT", "PLAIN", "NO_WEIGHTS", "TRUNCATED",
                                      "FOREIGN_STATE", "ENC", "CAPTIONED")]
    before = {r: _snapshot(r) for r in runs}
    argvs = [[a.format(**places) for a in argv] for argv, _, _ in CASES]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the download cases run in subprocesses meanwhile
        spawned = {i: pool.submit(_run, a) for i, a in enumerate(argvs) if _in_subprocess(a)}
        here = {i: _run_here([*a, "--quiet"] if a[0] == "train" else a, capsys)
                for i, a in enumerate(argvs) if not _in_subprocess(a)}
        results = [spawned[i].result() if i in spawned else here[i] for i in range(len(argvs))]
    failures = []
    for (argv, code, text), proc in zip(CASES, results):
        err = proc.stderr.strip()
        lines = [line for line in err.splitlines() if not line.startswith("ddpmlab: warning:")]
        ok = (proc.returncode == code and len(lines) == 1 and text in lines[0] and "Traceback" not in err)
        if not ok:
            failures.append(f"{' '.join(argv)} -> exit {proc.returncode}: {err[-400:]}")
    assert not failures, "\n".join(failures)
    assert {r: _snapshot(r) for r in runs} == before


def test_every_text_mistake_is_one_clear_line(places, capsys):
    from pathlib import Path

    runs = [Path(places[k]) for k in ("IMG", "COND", "TEXT", "ENC", "CAPTIONED")]
    before = {r: _snapshot(r) for r in runs}
    failures = []
    for argv, code, text in TEXT_CASES:
        argv = [a.format(**places) for a in argv]
        got = main([*argv, "--quiet"] if argv[0] == "train" else argv)
        err = capsys.readouterr().err.strip()
        lines = [line for line in err.splitlines() if not line.startswith("ddpmlab: warning:")]
        if not (got == code and len(lines) == 1 and text in lines[0]):
            failures.append(f"{' '.join(argv)} -> exit {got}: {err[-400:]}")
    assert not failures, "\n".join(failures)
    assert {r: _snapshot(r) for r in runs} == before
    assert not any(Path(places["TMP"], d).exists() for d in ("new", "new2"))


def test_text_extra_missing_is_one_line(places, capsys, monkeypatch):
    """Without the tokenizers package a text run says which extra to install, before sampling anything."""
    from ddpmlab import prompting

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` now fails as if not installed
    monkeypatch.setattr(prompting, "_ENCODERS", {})  # nothing loaded earlier in this process
    out = os.path.join(places["TMP"], "extra.png")
    assert main(["sample", places["TEXT"], "--prompt", "a cat", "--out", out]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ddpmlab: error: the text encoder needs the tokenizers package; install it with `pip install ddpmlab[text]` "
        "(or `make setup-text`)"]
    assert not os.path.exists(out)
