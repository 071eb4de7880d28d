import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ddpmlab.cli import main

from helpers import AUTOGUIDED, TINY_CLI_RUN, cli_sets

TINY = [*cli_sets(*TINY_CLI_RUN, "train.log_every=5"), "--quiet"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_valid_png(path):
    with Image.open(path) as im:
        im.verify()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny U-Net trained 10 steps on a folder of grayscale images, through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    folder = root / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    run = root / "run"
    assert main(["train", "--preset", "mnist", "--data", f"folder:{folder}", "--steps", "10",
                 "--out", str(run), *TINY, *cli_sets(*AUTOGUIDED)]) == 0
    return run


def test_train_writes_a_complete_run(image_run):
    for name in ("config.toml", "meta.json", "model.safetensors", "ema.safetensors", "state.pt",
                 "metrics.csv", "loss.png"):
        assert (image_run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in image_run.iterdir())
    assert_valid_png(image_run / "loss.png")


def test_sample_writes_grid_npz_trajectory_and_gif(image_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    code, stdout, _ = run_cli(capsys, "sample", str(image_run), "--n", "6", "--seed", "1", "--out", str(out),
                              "--trajectory", "--gif")
    assert code == 0
    assert_valid_png(out)
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (6, 16, 16, 1) and arrays["images"].dtype == np.uint8
    assert_valid_png(tmp_path / "trajectory.png")
    with Image.open(tmp_path / "reverse.gif") as gif:
        assert gif.n_frames > 5


def test_resume_extends_a_run(image_run, capsys):
    code, _, _ = run_cli(capsys, "train", "--resume", str(image_run), "--steps", "12", "--quiet")
    assert code == 0
    import torch

    assert torch.load(image_run / "state.pt", weights_only=True)["step"] == 12


def test_forward_strip_from_data_and_from_a_picture(tmp_path, capsys):
    out = tmp_path / "f.png"
    assert run_cli(capsys, "forward", "--data", "mnist-5k", "--t", "0,50,100,150,199", "--T", "200",
                   "--out", str(out))[0] == 0
    assert_valid_png(out)
    pic = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(pic)
    out2 = tmp_path / "g.png"
    assert run_cli(capsys, "forward", "--image", str(pic), "--image-size", "32", "--schedule", "linear,cosine",
                   "--out", str(out2))[0] == 0
    assert_valid_png(out2)


def test_schedules_plot_and_presets_list(tmp_path, capsys):
    out = tmp_path / "sched.png"
    assert run_cli(capsys, "schedules", "--T", "500", "--out", str(out))[0] == 0
    assert_valid_png(out)
    code, stdout, _ = run_cli(capsys, "presets")
    assert code == 0 and "mnist" in stdout and "tutorial-simpleunet" in stdout


def test_moons_end_to_end_scatter(tmp_path, capsys):
    run = tmp_path / "moons"
    assert run_cli(capsys, "train", "--preset", "moons", "--steps", "20", "--out", str(run), "--quiet")[0] == 0
    assert run_cli(capsys, "sample", str(run), "--n", "200", "--out", str(tmp_path / "m.png"), "--gif")[0] == 0
    assert_valid_png(tmp_path / "m.png")
    assert np.load(tmp_path / "m.npz")["points"].shape == (200, 2)


def test_subprocess_error_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "ddpmlab", "sample", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ddpmlab: error:") and "Traceback" not in proc.stderr


def test_main_puts_the_warning_format_back_for_code_that_runs_after_it(tmp_path, capsys):
    import warnings

    before = warnings.formatwarning
    assert main(["schedules", "--out", str(tmp_path / "s.png")]) == 0
    assert warnings.formatwarning is before  # an in-process caller keeps its own warning lines
    assert main(["sample", str(tmp_path / "no-such-run")]) != 0  # the error path too
    assert warnings.formatwarning is before


def test_tune_on_an_image_run_says_to_compare_before_adopting(image_run, capsys):
    code, out, _ = run_cli(capsys, "tune", str(image_run), "--sampler", "dpmpp-2m", "--steps", "3", "--samples", "4",
                           "--trials", "3", "--reference-steps", "12")
    assert code == 0 and "--spacing tuned` with --spacing auto first" in out
    assert (image_run / "timesteps.json").is_file()
