"""Text runs end to end with a tiny fake sentence encoder: training on each caption source, prompts through
every sampler and the edits, guidance with prompts, and the prompt checks."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab import checkpoint as ckpt
from ddpmlab import downloads, emoji
from ddpmlab.cli import main
from ddpmlab.config import build_config
from ddpmlab.downloads import NpmTarball, sha512_integrity
from ddpmlab.errors import ConfigError
from ddpmlab.guidance import prompted
from ddpmlab.metrics.alignment import _ranks, alignment, format_alignment
from ddpmlab.models import build_model
from ddpmlab.prompting import prompt_context, run_encoder
from ddpmlab.sampling import LoadedRun, load_run, sample
from ddpmlab.samplers import SAMPLERS
from ddpmlab.schedules import schedule_from_config
from ddpmlab.train import train

from helpers import TINY_UNET, fake_encoder_dir

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [*TINY_UNET, "model.context_dim=16", "data.clusters=0", "model.heads=2",
        "diffusion.T=50", "sample.steps=3", "train.steps=2", "train.batch_size=4", "train.log_every=1",
        "train.sample_every=2", "train.ckpt_every=2", "train.precision='fp32'", "sample.precision='fp32'"]


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    return fake_encoder_dir(tmp_path_factory.mktemp("enc") / "tiny")


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Move the zero-initialised cross-attention and pooled projections off zero, so prompts matter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def text_run(enc_dir, tmp_path_factory):
    """A LoadedRun of a random (perturbed) 16 px text U-Net; no training needed to test the plumbing."""
    cfg = build_config("mnist", None, [*TINY, "model.attention_resolutions=[8]", f"model.text_encoder='{enc_dir}'"])
    torch.manual_seed(0)
    model = _perturb(build_model(cfg, (1, 16, 16)))
    return LoadedRun(tmp_path_factory.mktemp("run"), cfg, model, schedule_from_config(cfg.diffusion), (1, 16, 16),
                     (), 0, torch.device("cpu"))


def test_guidance_with_prompts_is_one_batched_forward(text_run):
    enc = run_encoder(text_run.cfg)
    ctx = enc.encode(["a red apple", "the blue cat"])
    null = enc.encode(["", ""])
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 40])
    calls = []
    model = text_run.model

    def counting(*a, **k):
        calls.append(a[0].shape[0])
        return model(*a, **k)

    w = 2.0
    out = prompted(counting, ctx, w)(x, t)
    expected = (1 + w) * model(x, t, context=ctx) - w * model(x, t, context=null)
    assert calls == [4]  # conditional and null halves in one forward
    assert (out - expected).abs().max() < 1e-5
    assert (prompted(model, ctx, 0.0)(x, t) - model(x, t, context=ctx)).abs().max() < 1e-6
    assert (out - model(x, t, context=ctx)).abs().max() > 1e-3  # guidance changed something


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_prompts_through_every_sampler(text_run, sampler):
    import dataclasses

    run = dataclasses.replace(text_run, cfg=dataclasses.replace(
        text_run.cfg, sample=dataclasses.replace(text_run.cfg.sample, sampler=sampler, guidance=1.5)))
    both = sample(run, 4, prompts=["a red apple", "the blue cat"])
    first = sample(run, 2, prompts=["a red apple"])
    swapped = sample(run, 4, prompts=["the blue cat", "a red apple"])
    assert both.shape == (4, 1, 16, 16) and torch.isfinite(both).all()
    assert (both[:2] - first).abs().max() < 1e-4  # sample i depends on (seed, i) and its own prompt only
    assert (both[:2] - swapped[:2]).abs().max() > 1e-3  # the prompt steers the sample


def test_prompt_context_encodes_each_prompt_once_in_blocks(text_run):
    enc = run_encoder(text_run.cfg)
    seen = []
    forward = enc._forward
    enc._forward = lambda prompts: seen.append(list(prompts)) or forward(prompts)
    ctx = prompt_context(enc, ["a cat", "a dog", "a cat"], 6)
    assert [sorted(s) for s in seen] == [["a cat", "a dog"]]  # one forward, each prompt once
    assert len(ctx) == 6 and torch.equal(ctx.pooled[0], ctx.pooled[1]) and torch.equal(ctx.pooled[0], ctx.pooled[4])
    assert not torch.equal(ctx.pooled[0], ctx.pooled[2])


def test_long_prompt_is_truncated_with_a_warning_and_samples(text_run):
    with pytest.warns(UserWarning, match="truncated"):
        out = sample(text_run, 1, prompts=[" ".join(["red apple"] * 200)])
    assert torch.isfinite(out).all()


def test_empty_prompt_only_as_the_null_prompt(text_run):
    with pytest.raises(ConfigError, match="null prompt"):
        sample(text_run, 2, prompts=["", "a cat"])
    assert sample(text_run, 1, prompts=[""]).shape == (1, 1, 16, 16)


def _emoji_root(tmp_path, monkeypatch):
    from test_emoji import _tarball

    root = tmp_path / "data"
    (root / "emoji").mkdir(parents=True)
    tgz = _tarball(root / "emoji" / emoji.PACKAGE.filename)
    monkeypatch.setattr(emoji, "PACKAGE", NpmTarball(emoji.PACKAGE.name, emoji.PACKAGE.version, sha512_integrity(tgz)))
    monkeypatch.setattr(downloads, "_download", lambda *a: pytest.fail("the tests never touch the network"))
    return root


def _captioned_folder(tmp_path):
    """Four 16 px images: two captioned by .txt sidecars, two by metadata.jsonl."""
    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    (folder / "0.txt").write_text("a red apple")
    (folder / "1.txt").write_text("a blue car")
    rows = [{"file_name": "2.png", "text": "a dog"}, {"file_name": "3.png", "text": "a small cat"}]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


@pytest.mark.parametrize("source", ["emoji", "folder", "templates"])
def test_training_a_few_steps_on_each_caption_source(source, enc_dir, tmp_path, monkeypatch):
    preset, extra = {
        "emoji": ("emoji-text", ["train.batch_size=2", "model.attention_resolutions=[16]",
                                 f"data.root='{_emoji_root(tmp_path, monkeypatch) if source == 'emoji' else ''}'"]),
        "folder": ("mnist", [f"data.name='folder:{_captioned_folder(tmp_path)}'", "model.attention_resolutions=[8]"]),
        "templates": ("mnist", ["data.name='mnist-5k'", "data.captions='templates'",
                                "model.attention_resolutions=[7]"]),
    }[source]
    cfg = build_config(preset, None, [*TINY, f"model.text_encoder='{enc_dir}'", *extra])
    res = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert res.step == 2
    meta = json.loads((tmp_path / "run" / ckpt.META).read_text())
    assert meta["text_encoder"]["dim"] == 16 and meta["text_encoder"]["source"] == str(enc_dir)
    assert "caption_gen" in ckpt.load_state(tmp_path / "run")
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()  # the prompt-labelled preview grid
    run = load_run(tmp_path / "run")
    kv = [p for n, p in run.model.named_parameters() if n.endswith("cross.proj.weight") or "mid_cross.proj" in n]
    assert kv and any(p.abs().sum() > 0 for p in kv)  # gradients reached cross-attention from zero
    assert sample(run, 2, prompts=["a red apple"]).shape[0] == 2
    if source == "folder":  # the command line: a grid row per prompt, a guidance sweep, a prompted edit
        run_dir, out = str(tmp_path / "run"), tmp_path / "grid.png"
        assert main(["sample", run_dir, "--prompt", "a red apple", "--prompt", "a dog", "--n", "4", "--steps", "2",
                     "--guidance", "2", "--out", str(out)]) == 0
        assert out.is_file() and np.load(out.with_suffix(".npz"))["images"].shape == (4, 16, 16, 1)
        assert main(["sample", run_dir, "--prompt", "a dog", "--guidance-sweep", "0,2", "--n", "2", "--steps", "2",
                     "--out", str(tmp_path / "sweep.png")]) == 0
        assert main(["interpolate", run_dir, "--prompt", "a dog", "--frames", "2", "--steps", "2",
                     "--out", str(tmp_path / "lerp.png")]) == 0
        assert (tmp_path / "sweep.png").is_file() and (tmp_path / "lerp.png").is_file()
    else:  # alignment scoring: classifier for templates, retrieval for captions
        r = alignment(run, [0.0, 2.0], per_prompt=1)
        assert [row["guidance"] for row in r["rows"]] == [0.0, 2.0]
        if source == "templates":
            assert len(r["prompts"]) == 20 and r["chance"] == 0.1 and r["ceiling"] > 0.9  # held-out phrasings
            assert all(0 <= row["accuracy"] <= 1 for row in r["rows"])
        else:
            assert r["prompts"] == ["red apple", "smiling face with heart-shaped eyes"] and r["chance"]["top1"] == 0.5
            assert all(0.5 <= row["mrr"] <= 1 for row in r["rows"])
        assert len(format_alignment(r)) == 3


def test_retrieval_ranks_follow_the_neighbours_captions(monkeypatch):
    import ddpmlab.metrics.alignment as A

    monkeypatch.setattr(A, "NEIGHBOURS", 2)  # each image's two copies in the training set
    train_x = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    captions = torch.eye(3)  # caption j is orthogonal to the others
    own = torch.tensor([0, 1, 2])
    near = _ranks(train_x + 0.01, own, train_x.repeat(2, 1, 1, 1), captions.repeat(2, 1), captions)
    assert near.tolist() == [1, 1, 1]
    wrong = _ranks(train_x, torch.tensor([2, 0, 1]), train_x.repeat(2, 1, 1, 1), captions.repeat(2, 1), captions)
    assert wrong.tolist() == [2, 2, 2]  # the own prompt ties with none and loses to the neighbours' caption
