"""Class-conditional sampling, guidance and the editing commands through the CLI, on a tiny run."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.cli import main

from helpers import TINY_CLI_RUN, cli_sets

TINY = [*cli_sets(*TINY_CLI_RUN, "train.log_every=5"), "--quiet"]


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    rng = np.random.default_rng(0)
    for cls in ("dark", "light"):
        (root / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            base = 40 if cls == "dark" else 200
            Image.fromarray((base + rng.integers(0, 30, (16, 16))).astype(np.uint8), mode="L").save(
                root / "imgs" / cls / f"{i}.png")
    run = root / "run"
    assert main(["train", "--preset", "mnist-cond", "--data", f"folder:{root / 'imgs'}", "--steps", "10",
                 "--set", "model.num_classes=2", "--out", str(run), *TINY]) == 0
    pic = root / "pic.png"
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8), mode="L").save(pic)  # wrong size on purpose
    mask = root / "mask.png"
    m = np.zeros((20, 24), np.uint8)
    m[5:12, 6:14] = 255
    Image.fromarray(m).save(mask)
    return run, pic, mask


def test_class_and_guidance_sampling(cond_run, tmp_path, capsys):
    run, _, _ = cond_run
    assert main(["sample", str(run), "--n", "4", "--class", "light", "--guidance", "2", "--out",
                 str(tmp_path / "a.png")]) == 0
    assert np.load(tmp_path / "a.npz")["labels"].tolist() == [1, 1, 1, 1]
    assert main(["sample", str(run), "--n", "6", "--class", "all", "--out", str(tmp_path / "b.png")]) == 0
    assert np.load(tmp_path / "b.npz")["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert main(["sample", str(run), "--guidance-sweep", "0,1,3", "--n", "3", "--out", str(tmp_path / "c.png")]) == 0
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > im.size[1]  # three blocks side by side


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "euler", "heun"])
def test_every_sampler_runs_from_the_cli(cond_run, tmp_path, sampler):
    run, _, _ = cond_run
    assert main(["sample", str(run), "--n", "2", "--sampler", sampler, "--steps", "4", "--guidance", "1",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (2, 16, 16, 1)


def test_bad_class_and_guidance_are_one_line_errors(cond_run, tmp_path, capsys):
    run, _, _ = cond_run
    assert main(["sample", str(run), "--class", "9", "--out", str(tmp_path / "x.png")]) == 2
    assert "outside [0, 2)" in capsys.readouterr().err
    assert main(["sample", str(run), "--class", "purple", "--out", str(tmp_path / "x.png")]) == 2
    assert "dark, light" in capsys.readouterr().err


def test_sdedit_inpaint_interpolate_invert(cond_run, tmp_path, capsys):
    run, pic, mask = cond_run
    with pytest.warns(UserWarning, match="resized"):
        assert main(["edit", str(run), "--image", str(pic), "--strength", "0.5", "--n", "2",
                     "--out", str(tmp_path / "e.png")]) == 0
    with pytest.warns(UserWarning):
        assert main(["inpaint", str(run), "--image", str(pic), "--mask", str(mask), "--n", "2", "--resample", "2",
                     "--jump", "2", "--out", str(tmp_path / "i.png")]) == 0
    assert main(["interpolate", str(run), "--frames", "4", "--out", str(tmp_path / "p.png")]) == 0
    with pytest.warns(UserWarning):
        assert main(["invert", str(run), "--image", str(pic), "--image", str(pic), "--out",
                     str(tmp_path / "l.npz")]) == 0
    for name in ("e.png", "i.png", "p.png", "l.png"):
        with Image.open(tmp_path / name) as im:
            im.verify()
    assert np.load(tmp_path / "l.npz")["latents"].shape == (2, 1, 16, 16)


def test_inpaint_keeps_known_pixels_exactly(cond_run):
    from ddpmlab.edit import inpaint
    from ddpmlab.sampling import load_run

    run = load_run(cond_run[0])
    image = torch.rand(1, 1, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:10, 4:10] = 1
    out = inpaint(run, image, mask, n=2, jump=2, resample=3)
    keep = (mask == 0).expand(2, 1, 16, 16)
    assert torch.equal(out[keep], image.expand(2, 1, 16, 16)[keep])
    assert not torch.allclose(out[~keep], image.expand(2, 1, 16, 16)[~keep])


def test_repaint_path_goes_down_with_jumps():
    from ddpmlab.edit import repaint_path

    assert repaint_path(4, 2, 1) == [0, 1, 2, 3, 4]
    path = repaint_path(6, 2, 2)
    assert path[0] == 0 and path[-1] == 6
    assert path == [0, 1, 2, 3, 2, 1, 2, 3, 4, 5, 4, 3, 4, 5, 6]


def _resampled_blocks(path):
    """(low, high) index ranges that the chain is noised back over, in the order of the jumps."""
    blocks, k = [], 0
    while k < len(path) - 1:
        if path[k + 1] < path[k]:
            top = path[k]
            while path[k + 1] < path[k]:
                k += 1
            blocks.append((path[k], top))
        k += 1
    return blocks


def test_repaint_jumps_follow_the_papers_schedule():
    # Lugmayr et al. 2022's get_schedule_jump(t_T=20, jump_length=5, jump_n_sample=2) jumps back at
    # t = 10, 5, 0 (its t counts down to 0 at the last reverse step), i.e. indices 9, 14, 19 of the
    # decreasing list: the least noisy block [14, 19] is harmonised, none near pure noise.
    from ddpmlab.edit import repaint_path

    assert _resampled_blocks(repaint_path(20, 5, 2)) == [(4, 9), (9, 14), (14, 19)]
    assert _resampled_blocks(repaint_path(20, 5, 3)) == [(4, 9), (4, 9), (9, 14), (9, 14), (14, 19), (14, 19)]
    path = repaint_path(20, 5, 3)
    downs = sum(b > a for a, b in zip(path, path[1:]))
    assert downs == 20 + 3 * 2 * 5  # every reverse step once, plus each block twice more


def test_inpaint_first_step_draws_fresh_noise(cond_run, monkeypatch):
    # The first reverse step's noise must continue each sample's stream past x_T, not redraw x_T.
    import ddpmlab.edit as edit
    from ddpmlab.sampling import load_run
    from ddpmlab.sampling import initial_noise

    run = load_run(cond_run[0])
    draws = []
    real = edit.randn_like

    def record(x, gens):
        draws.append(real(x, gens))
        return draws[-1]

    monkeypatch.setattr(edit, "randn_like", record)
    image = torch.zeros(1, 1, 16, 16)
    mask = torch.ones(1, 1, 16, 16)
    edit.inpaint(run, image, mask, n=2)
    x_T, _ = initial_noise(run.cfg.sample.seed, range(2), run.item_shape, run.device)
    assert len(draws) >= 2
    assert not torch.allclose(draws[0], x_T)
    assert all(not torch.allclose(d, x_T) for d in draws)


def test_mask_size_mismatch_is_an_error(cond_run, tmp_path, capsys):
    run, pic, _ = cond_run
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    assert main(["inpaint", str(run), "--image", str(pic), "--mask", str(tmp_path / "m.png")]) == 2
    assert "mask is 8x8 but the image is 24x20" in capsys.readouterr().err


def test_guidance_on_unconditional_run_is_refused(tmp_path, capsys):
    run = tmp_path / "m"
    assert main(["train", "--preset", "moons", "--steps", "5", "--out", str(run), "--quiet"]) == 0
    assert main(["sample", str(run), "--guidance", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "needs a class-conditional run" in capsys.readouterr().err
