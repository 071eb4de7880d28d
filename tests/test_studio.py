"""`ddpmlab studio` through its HTTP API (gradio_client) and its jobs, on two tiny runs trained here.

One server on a free loopback port serves the module and is stopped at its end; every call has a timeout.
The browser tests (test_studio_browser.py) reuse tiny_runs() and serve().
"""

import contextlib
import socket
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.cli import main
from ddpmlab.errors import DataError
from ddpmlab.studio.browser import free_port

gr = pytest.importorskip("gradio", reason="the studio extra is not installed: pip install -e .[studio]")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with the studio extra")

TINY = ["--set", "model.channels=8", "--set", "model.channel_mults=[1, 2]", "--set", "model.attention_resolutions=[]",
        "--set", "diffusion.T=50", "--set", "sample.steps=8", "--set", "train.batch_size=8", "--set",
        "train.log_every=2", "--set", "train.ckpt_every=4", "--set", "train.keep=2", "--set",
        "train.precision='fp32'", "--set", "sample.precision='fp32'", "--quiet"]
TIMEOUT = 60  # seconds any one request may take


def tiny_runs(base: Path) -> dict[str, Path]:
    """An unconditional and a class-conditional run (10 steps on 16 pictures of 16 x 16), a run without weights
    and a folder that is not a run; made once under base and reused."""
    runs = {name: base / name for name in ("plain", "cond", "noweights", "notarun")}
    if (runs["cond"] / "ema.safetensors").is_file():
        return runs
    rng = np.random.default_rng(0)
    data = base / "pictures"
    for cls, level in (("dark", 40), ("light", 200)):
        (data / cls).mkdir(parents=True)
        for i in range(8):
            pixels = np.full((16, 16), level, np.uint8)
            pixels[4:12, 4 + i % 4 : 8 + i % 4] = 255 - level  # a bar that moves: some structure to learn
            Image.fromarray((pixels + rng.integers(0, 20, (16, 16))).astype(np.uint8), mode="L").save(
                data / cls / f"{i}.png")
    with torch.random.fork_rng():
        assert main(["train", "--preset", "mnist", "--data", f"folder:{data}", "--steps", "8", "--out",
                     str(runs["plain"]), *TINY, "--set", "data.clusters=0", "--set", "train.guide_at=0.3"]) == 0
        assert main(["train", "--preset", "mnist-cond", "--data", f"folder:{data}", "--steps", "8", "--set",
                     "model.num_classes=2", "--out", str(runs["cond"]), *TINY]) == 0
    runs["noweights"].mkdir()
    for name in ("config.toml", "meta.json"):
        (runs["noweights"] / name).write_bytes((runs["plain"] / name).read_bytes())
    runs["notarun"].mkdir()
    (runs["notarun"] / "notes.txt").write_text("not a run")
    return runs


@contextlib.contextmanager
def serve(runs: dict[str, Path]):
    """The studio on a free loopback port for the runs (and the non-run folder, which it skips); closed after."""
    from ddpmlab.studio import start

    studio = start([str(runs[k]) for k in ("plain", "cond", "noweights", "notarun")], "127.0.0.1", free_port())
    try:
        yield studio
    finally:
        studio.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):  # tiny networks on 2 shared cores: one thread is ~8x faster here
    return tiny_runs(tmp_path_factory.getbasetemp() / "studio-runs")


@pytest.fixture(scope="module")
def studio(runs, one_thread):
    with serve(runs) as s:
        yield s


@pytest.fixture(scope="module")
def client(studio):
    return gradio_client.Client(studio.url, verbose=False, download_files=False)


def call(client, api_name: str, *args):
    """One request with a time limit; the server's one-line message as AppError on failure."""
    return client.submit(*args, api_name=api_name).result(timeout=TIMEOUT)


def path_of(value) -> Path:
    """The server-side file of an output (a file, or a component update holding one)."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        value = value["value"]
    return Path(value["path"] if isinstance(value, dict) else value)


def sample_args(runs, sampler="dpmpp-2m", steps=8, spacing="karras", seed=3, n=4, klass="all", guidance=1.0,
                run="cond"):
    return (str(runs[run]), "latest", sampler, steps, spacing, seed, n, klass, "", guidance)


def cli_png(run: Path, out: Path, *flags: str) -> bytes:
    assert main(["sample", str(run), "--out", str(out), *flags]) == 0
    return out.read_bytes()


def test_startup_skips_what_is_not_a_run_and_binds_loopback(studio, runs):
    assert studio.url.startswith("http://127.0.0.1:")
    assert len(studio.notes) == 1 and str(runs["notarun"]) in studio.notes[0] and "config.toml" in studio.notes[0]


def test_sample_equals_ddpmlab_sample_byte_for_byte(client, runs, tmp_path):
    """The run's own settings (sampler, steps, spacing, guidance), then a sampler picked in the page (auto spacing)."""
    own = tomllib.loads((runs["cond"] / "config.toml").read_text())["sample"]
    for args, flags in ((sample_args(runs, own["sampler"], own["steps"], own["spacing"], guidance=own["guidance"]),
                         ["--n", "4", "--seed", "3"]),
                        (sample_args(runs, "ddim", 5, "auto", 7, 6, "light", 2.0),
                         ["--n", "6", "--seed", "7", "--sampler", "ddim", "--steps", "5", "--class", "light",
                          "--guidance", "2"])):
        *_, status, grid, png, npz = call(client, "/sample", *args)
        want = cli_png(runs["cond"], tmp_path / "cli.png", *flags)
        assert path_of(grid).read_bytes() == want
        assert path_of(png).read_bytes() == want
        with np.load(path_of(npz)) as got, np.load(tmp_path / "cli.npz") as ref:
            assert np.array_equal(got["images"], ref["images"]) and np.array_equal(got["labels"], ref["labels"])
        assert "s per image" in status


def test_sampling_streams_a_frame_per_step(client, runs):
    job = client.submit(*sample_args(runs, "ddim", 8, "trailing", n=4, run="plain"), api_name="/sample")
    job.result(timeout=TIMEOUT)
    frames = [o for o in job.outputs() if o[0] is not None]
    steps = [o[2] for o in frames if o[2].startswith("step")]
    assert len(steps) >= 2 and steps[-1] == "step 8: t = 0 of 50"  # the last step is never skipped
    seen = {path_of(o[0]).read_bytes() for o in frames}
    assert len(seen) >= 2  # x_t changes from step to step
    last = np.asarray(Image.open(path_of(frames[-1][0])))
    assert last.shape == (38, 38, 3)  # a 2 x 2 grid of 16 px images with 2 px padding
    assert np.array_equal(last, np.asarray(Image.open(path_of(job.outputs()[-1][3]))))  # x_0 is the sample


def test_two_requests_are_queued_not_interleaved(client, runs, monkeypatch):
    from ddpmlab.studio.jobs import sampling

    spans, draw = [], sampling._draw

    def timed(*args):
        start = time.perf_counter()
        try:
            return draw(*args)
        finally:
            spans.append((start, time.perf_counter()))

    monkeypatch.setattr(sampling, "_draw", timed)
    other = gradio_client.Client(client.src, verbose=False, download_files=False)  # a second page
    a = client.submit(*sample_args(runs, "ddpm", 50, "trailing", n=16), api_name="/sample")
    b = other.submit(*sample_args(runs, "ddpm", 50, "trailing", n=16, seed=4), api_name="/sample")
    ra, rb = a.result(timeout=TIMEOUT), b.result(timeout=TIMEOUT)
    assert path_of(ra[3]).read_bytes() != path_of(rb[3]).read_bytes()
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 <= s2, "the second request ran on the network while the first was still sampling"


def test_stop_ends_the_job_at_its_next_step(client, runs, monkeypatch):
    from ddpmlab.studio.jobs import sampling

    draw = sampling._draw

    def slowly(run, n, labels, callback):  # 50 steps of 20 ms at least: time to press Stop
        return draw(run, n, labels, lambda *a: (time.sleep(0.02), callback(*a)))

    monkeypatch.setattr(sampling, "_draw", slowly)
    job = client.submit(*sample_args(runs, "ddpm", 50, "trailing", n=64, run="plain"), api_name="/sample")
    deadline = time.time() + TIMEOUT
    while not any(isinstance(o[2], str) and o[2].startswith("step") for o in job.outputs()):
        assert time.time() < deadline and not job.done()
        time.sleep(0.02)
    call(client, "/stop")  # what the Stop button does for this page
    last = job.result(timeout=TIMEOUT)
    steps = int(last[2].split("step ")[1].split(":")[0])
    assert last[2].startswith("stopped at step") and steps < 50 and last[3] is None
    assert not [t for t in threading.enumerate() if t.name == "ddpmlab-studio-job"]
    *_, grid, _, _ = call(client, "/sample", *sample_args(runs, "ddim", 4, "trailing", n=2, run="plain"))
    assert Image.open(path_of(grid)).size == (20, 38)  # two images: one column


def test_compare_runs_the_same_seeds_through_two_settings(client, runs, tmp_path):
    a, b, text = call(client, "/compare", str(runs["plain"]), "latest", 5, 4, "all", 0, "ddim", 6, "auto", "ddpm", 6,
                      "auto")
    assert path_of(a).read_bytes() == cli_png(runs["plain"], tmp_path / "a.png", "--n", "4", "--seed", "5",
                                              "--sampler", "ddim", "--steps", "6")
    assert path_of(a).read_bytes() != path_of(b).read_bytes()
    assert "A: ddim at 6 steps" in text and "B: ddpm at 6 steps" in text


def test_guidance_sweep_equals_the_cli_figure(client, runs, tmp_path):
    out, text = call(client, "/guidance", str(runs["cond"]), "latest", "0,2", 3, 1, "ddim", 4, "auto", "")
    want = cli_png(runs["cond"], tmp_path / "sweep.png", "--guidance-sweep", "0,2", "--n", "3", "--seed", "1",
                   "--sampler", "ddim", "--steps", "4")
    assert path_of(out).read_bytes() == want
    with pytest.raises(gradio_client.exceptions.AppError, match="needs a class-conditional run"):
        call(client, "/guidance", str(runs["plain"]), "latest", "0,2", 3, 1, "ddim", 4, "auto", "")


def test_forward_marks_t_and_noises_more_as_t_grows(client):
    shown = {}
    for t in (0, 100, 1000):
        x0, xt, strip, curve, text = call(client, "/forward", "dataset", "mnist-5k", 3, None, "cosine", 1000, t, 0)
        shown[t] = np.asarray(Image.open(path_of(xt))).astype(float)
        assert f"t = {t}" in text
    assert np.array_equal(shown[0], np.asarray(Image.open(path_of(x0))).astype(float))  # t = 0 is x_0 itself
    assert shown[0].shape == (28, 28, 3) and Image.open(path_of(curve)).size[0] > 300
    gap = {t: np.abs(shown[t] - shown[0]).mean() for t in (100, 1000)}
    assert 0 < gap[100] < gap[1000]


def test_edits_through_the_api(client, runs):
    editor = call(client, "/edit_source", str(runs["cond"]), "training image", 9, None)
    assert Image.open(path_of(editor["background"])).size == (256, 256)  # 16 px shown 16 times larger
    grid = call(client, "/sdedit", str(runs["cond"]), "latest", 0.5, 3, 0, "light")
    assert Image.open(path_of(grid)).size == (5 * 18 + 2, 20)  # input, noised, 3 edits
    strip = call(client, "/interpolate", str(runs["cond"]), "latest", 1, 2, 5, "dark")
    assert Image.open(path_of(strip)).size == (5 * 18 + 2, 20)


def test_inpaint_fills_the_painted_region_and_keeps_the_rest(runs):
    from ddpmlab.studio.handlers import edit
    from ddpmlab.studio.jobs.inputs import run_dataset_image

    x, _ = run_dataset_image(runs["cond"], 0)
    strokes = np.zeros((256, 256, 4), np.uint8)
    strokes[64:128, 96:160, 3] = 255  # painted at 16x: pixels 4..7 down, 6..9 across
    mask = edit._mask({"layers": [strokes]}, x)
    assert mask.shape == (1, 1, 16, 16) and mask.sum() == 16 and mask[0, 0, 4:8, 6:10].all()
    grid = np.asarray(Image.open(edit.inpaint(str(runs["cond"]), "latest", x.numpy(), {"layers": [strokes]},
                                              2, 0, "all", 1, 10)))
    cells = [grid[2:18, 2 + 18 * k : 18 + 18 * k] for k in range(4)]  # input, masked, 2 fills
    keep = np.ones((16, 16), bool)
    keep[4:8, 6:10] = False
    for fill in cells[2:]:
        assert np.abs(fill[keep].astype(int) - cells[0][keep]).max() <= 1  # known pixels kept (8-bit rounding)
        assert np.abs(fill[~keep].astype(int) - cells[0][~keep]).mean() > 0


def test_run_records(runs, tmp_path):
    from ddpmlab.studio.jobs.records import run_records

    r = run_records(runs["cond"], tmp_path)
    assert "num_classes = 2" in r.config and r.loss_png is not None and r.loss_png.stat().st_size > 1000
    assert [row["step"] for row in r.metrics][-1] == "8" and r.checkpoints == (4, 8)


def test_an_earlier_checkpoint_samples_differently(client, runs):
    args = list(sample_args(runs, "ddim", 4, "trailing", n=2))
    latest = path_of(call(client, "/sample", *args)[3]).read_bytes()
    args[1] = "4"
    assert path_of(call(client, "/sample", *args)[3]).read_bytes() != latest
    args[1] = "3"
    with pytest.raises(gradio_client.exceptions.AppError, match="no checkpoint at step 3"):
        call(client, "/sample", *args)


def test_bad_input_is_one_line_in_the_page_and_the_server_keeps_serving(client, runs, tmp_path):
    from ddpmlab.studio.jobs import inputs

    errors = gradio_client.exceptions.AppError
    with pytest.raises(errors, match=r"ema.safetensors is missing; the run has no saved weights yet"):
        call(client, "/sample", *sample_args(runs, run="noweights"))
    with pytest.raises(errors, match="class 'cat' is neither a class index nor one of dark, light"):
        call(client, "/sample", *sample_args(runs, klass="cat"))
    with pytest.raises(errors, match="64"):  # the page's slider refuses it before the job does
        call(client, "/sample", *sample_args(runs, n=65))
    with pytest.raises(errors, match="cannot exceed diffusion.T"):
        call(client, "/sample", *sample_args(runs, steps=51))
    with pytest.raises(errors, match=r"has no timesteps tuned for ddim at 3 steps; run `ddpmlab tune"):
        call(client, "/sample", *sample_args(runs, "ddim", 3, "tuned", n=1))
    text = tmp_path / "notes.png"
    text.write_text("these are words, not pixels")
    with pytest.raises(errors, match="notes.png is not an image; upload a PNG"):
        call(client, "/forward", "upload", "mnist-5k", 0, gradio_client.handle_file(str(text)), "cosine", 100, 5, 0)
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (inputs.MAX_UPLOAD_MB * 2**20 + 1))
    with pytest.raises(DataError, match="huge.png is 8.0 MB; upload a picture under 8 MB"):
        inputs.uploaded_picture(huge)
    *_, grid, _, _ = call(client, "/sample", *sample_args(runs, "ddim", 3, "trailing", n=1))  # still serving
    assert Image.open(path_of(grid)).size == (16, 16)  # one image: no grid padding


def test_cli_errors_are_one_line(runs, capsys, monkeypatch):
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["studio", str(runs["plain"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ddpmlab: error: port {port} on 127.0.0.1 is in use; choose another with --port N"
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the extra were not installed
    assert main(["studio", str(runs["plain"])]) == 2
    assert capsys.readouterr().err.strip() == ("ddpmlab: error: the studio needs Gradio, an optional extra: "
                                               "pip install -e .[studio]")


def test_the_network_lock_is_free_after_every_request(studio):
    from ddpmlab.studio.jobs.streaming import NETWORK

    assert NETWORK.acquire(timeout=TIMEOUT)
    NETWORK.release()
    assert not [t for t in threading.enumerate() if t.name == "ddpmlab-studio-job"]


def text_run(base: Path) -> Path:
    """A text-conditional run without training: a random, perturbed 16 px text U-Net and a tiny sentence encoder
    (helpers.fake_encoder_dir), saved as `ddpmlab train` saves a run."""
    from helpers import fake_encoder_dir

    from ddpmlab import checkpoint as ckpt
    from ddpmlab.config import build_config
    from ddpmlab.models import build_model

    run = base / "text"
    if (run / "ema.safetensors").is_file():
        return run
    enc = fake_encoder_dir(base / "encoder")
    cfg = build_config("mnist", None, ["model.channels=8", "model.channel_mults=[1, 2]", "model.context_dim=16",
                                       "data.clusters=0",
                                       "model.heads=2", "model.attention_resolutions=[8]", "diffusion.T=50",
                                       "sample.steps=4", "sample.precision='fp32'", f"model.text_encoder='{enc}'"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg, (1, 16, 16))
        with torch.no_grad():  # the zero-initialised cross-attention off zero, so that prompts matter
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    run.mkdir(parents=True)
    ckpt.write_config(run, cfg)
    ckpt.write_meta(run, (1, 16, 16), (), "folder:none")
    ckpt.save_checkpoint(run, model, model, {}, 1)
    return run


def test_a_text_run_samples_its_prompts_as_the_cli_does(client, runs, tmp_path_factory, tmp_path):
    run = text_run(tmp_path_factory.getbasetemp() / "studio-text")
    args = (str(run), "latest", "ddim", 4, "auto", 2, 4, "all", "a red apple\nthe blue cat", 3.0)
    *_, status, grid, _, npz = call(client, "/sample", *args)
    want = cli_png(run, tmp_path / "cli.png", "--n", "4", "--seed", "2", "--sampler", "ddim", "--steps", "4",
                   "--prompt", "a red apple", "--prompt", "the blue cat", "--guidance", "3")
    assert path_of(grid).read_bytes() == want  # the prompt grid, a row per prompt with its text beside it
    other = call(client, "/sample", *args[:8], "a big dog\nthe blue cat", 3.0)[3]
    assert path_of(other).read_bytes() != want
    with pytest.raises(gradio_client.exceptions.AppError, match="do not split into 2 prompt rows"):
        call(client, "/sample", *args[:6], 3, *args[7:])


def moons_run(run: Path, preset: str) -> Path:
    """A 2-D run of 150 steps (a second): an untrained net throws its points far off the scatter's axes, so every
    figure would look the same."""
    if not (run / "ema.safetensors").is_file():
        with torch.random.fork_rng():
            assert main(["train", "--preset", preset, "--steps", "150", "--out", str(run), "--set", "diffusion.T=50",
                         "--set", "sample.steps=6", "--set", "train.batch_size=128", "--set", "train.log_every=50",
                         "--quiet"]) == 0
    return run


def test_a_2d_run_samples_as_the_cli_does_and_refuses_image_jobs(client, tmp_path_factory, tmp_path):
    run = moons_run(tmp_path_factory.getbasetemp() / "studio-moons", "moons")
    job = client.submit(str(run), "latest", "ddim", 6, "auto", 4, 64, "all", "", 0.0, api_name="/sample")
    *_, status, grid, png, npz = job.result(timeout=TIMEOUT)
    want = cli_png(run, tmp_path / "cli.png", "--n", "64", "--seed", "4", "--sampler", "ddim", "--steps", "6")
    assert path_of(grid).read_bytes() == want and path_of(png).read_bytes() == want  # the CLI's scatter
    with np.load(path_of(npz)) as got, np.load(tmp_path / "cli.npz") as ref:
        assert got["points"].shape == (64, 2) and np.array_equal(got["points"], ref["points"])
    from ddpmlab.studio.handlers.common import settings
    from ddpmlab.studio.jobs.sampling import Frame, sample_stream

    stream = sample_stream(run, None, settings("ddim", 6, "auto", 4, 64, "all", "", 0.0), tmp_path / "job",
                           threading.Event())
    frames = [item for item in stream if isinstance(item, Frame)]
    assert frames[0].x_t.shape == (320, 320, 3) and frames[-1].t == 0
    assert not np.array_equal(frames[0].x_t, frames[-1].x_t)  # the scatter of x_t moves from step to step
    assert "s per image" in status
    a, b, text = call(client, "/compare", str(run), "latest", 5, 64, "all", 0, "ddim", 6, "auto", "ddpm", 6, "auto")
    assert path_of(a).read_bytes() != path_of(b).read_bytes() and "B: ddpm at 6 steps" in text
    with pytest.raises(gradio_client.exceptions.AppError, match="2D points"):  # the Edit tab needs pictures
        call(client, "/edit_source", str(run), "training image", 0, None)
    with pytest.raises(gradio_client.exceptions.AppError, match="models 2D points; editing needs an image run"):
        call(client, "/interpolate", str(run), "latest", 1, 2, 5, "all")


def test_a_2d_class_run_sweeps_guidance_as_the_cli_does(client, tmp_path_factory, tmp_path):
    run = moons_run(tmp_path_factory.getbasetemp() / "studio-moons-cond", "moons-cond")
    out, text = call(client, "/guidance", str(run), "latest", "0,3", 16, 1, "ddim", 6, "auto", "")
    want = cli_png(run, tmp_path / "sweep.png", "--guidance-sweep", "0,3", "--n", "16", "--seed", "1",
                   "--sampler", "ddim", "--steps", "6")
    assert path_of(out).read_bytes() == want


def test_gradio_s_own_pandas_deprecations_stay_off_the_console():
    """Gradio's queue tabulates its events with pandas after every request; pandas 3 deprecates how it does."""
    import warnings

    from gradio.queueing import Queue

    from ddpmlab.studio import gradio

    gradio()
    with warnings.catch_warnings(record=True) as caught:
        Queue._get_df([{"a": 1.0, "b": None}, {"a": None, "b": "x"}])
    assert [str(w.message) for w in caught] == []
