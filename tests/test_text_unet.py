import dataclasses

import pytest
import torch

from ddpmlab.config import build_config
from ddpmlab.errors import ConfigError
from ddpmlab.models import UNet, UNetConfig, build_model
from ddpmlab.text import TextContext

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two fighting
D = 12  # a tiny context width (all-MiniLM-L6-v2 has 384)
CFG = UNetConfig(in_channels=3, image_size=16, channels=16, channel_mults=(1, 2), attention_resolutions=(8,),
                 heads=2, num_classes=4, context_dim=D)


def assert_near(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """max |a - b| <= atol (torch.testing.assert_close costs seconds on its first call)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= atol, f"max abs difference {err:.3g} > {atol}"



def _perturbed(net: UNet, scale: float = 0.05) -> UNet:
    """Move zero-initialised layers (output convs, cross-attention projections) off zero so every path matters."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def _context(B: int, lengths: list[int], L: int | None = None) -> TextContext:
    L = L or max(lengths)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    return TextContext(torch.randn(B, L, D), mask, torch.nn.functional.normalize(torch.randn(B, D), dim=1))


def test_text_unet_shapes_and_tuple_context():
    net = UNet(CFG)
    x, t, ctx = torch.randn(3, 3, 16, 16), torch.tensor([1, 50, 900]), _context(3, [5, 2, 7])
    assert net(x, t, torch.tensor([0, 1, 4]), ctx).shape == x.shape
    assert net(x, t, context=(ctx.tokens, ctx.mask, ctx.pooled)).shape == x.shape
    assert net(x, t).shape == x.shape  # no context: the null context everywhere
    crosses = [n for n, m in net.named_modules() if type(m).__name__ == "CrossAttention"]
    assert crosses == ["down.2.cross", "mid_cross", "up.0.cross", "up.1.cross"]  # at 8 px and in the middle


def test_padding_tokens_do_not_change_the_output():
    net = _perturbed(UNet(CFG)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 400])
    ctx = _context(2, [3, 5])
    garbage = ctx.tokens.clone()
    garbage[0, 3:] = 100 * torch.randn(2, D)  # behind the mask
    padded = TextContext(torch.cat([garbage, torch.randn(2, 4, D)], 1),
                         torch.cat([ctx.mask, torch.zeros(2, 4, dtype=torch.bool)], 1), ctx.pooled)
    with torch.no_grad():
        ref = net(x, t, context=ctx)
        assert_near(net(x, t, context=padded), ref, 1e-5)
        changed = TextContext(ctx.tokens + 0.5, ctx.mask, ctx.pooled)
        assert (net(x, t, context=changed) - ref).abs().max() > 1e-3  # the real tokens do matter


def test_dropped_rows_use_the_null_context():
    net = _perturbed(UNet(CFG)).eval()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([5, 60, 700])
    ctx = _context(3, [4, 6, 2])
    drop = torch.tensor([False, True, True])
    other = _context(3, [7, 1, 3])
    with torch.no_grad():
        out = net(x, t, context=ctx.dropped(drop))
        null = net(x, t)  # context=None is the null context for every row
        cond = net(x, t, context=ctx)
        assert_near(out[1:], null[1:], 1e-5)  # whatever the dropped prompt was
        assert_near(net(x, t, context=other.dropped(drop))[1:], null[1:], 1e-5)
        assert_near(out[0], cond[0], 1e-5)
        assert (cond[1] - null[1]).abs().max() > 1e-3
        flagged = TextContext(ctx.tokens, ctx.mask, ctx.pooled, null=drop)  # the null prompt "" as the encoder flags it
        assert_near(net(x, t, context=flagged), out, 1e-6)


def test_gradient_reaches_cross_attention_and_null_context():
    net = _perturbed(UNet(CFG), 0.01)
    ctx = _context(4, [3, 5, 2, 4]).dropped(torch.tensor([False, False, True, False]))
    out = net(torch.randn(4, 3, 16, 16), torch.tensor([1, 10, 100, 500]), torch.tensor([0, 1, 2, 4]), ctx)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert any("cross.kv" in n for n, _ in net.named_parameters()) and net.text.null_token.grad.abs().sum() > 0


def test_without_context_dim_the_network_is_unchanged():
    base = dataclasses.replace(CFG, context_dim=0)
    torch.manual_seed(3)
    plain = UNet(base)
    torch.manual_seed(3)
    text = UNet(CFG)
    extra = {"text.", "mid_cross.", ".cross."}
    added = [k for k in text.state_dict() if any(e in k or k.startswith(e) for e in extra)]
    assert added and not any(any(e in k or k.startswith(e) for e in extra) for k in plain.state_dict())
    assert [k for k in text.state_dict() if k not in added] == list(plain.state_dict())  # same names, same order
    _perturbed(plain)
    text.load_state_dict(plain.state_dict(), strict=False)  # the new layers start at zero: the same function
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 300]), torch.tensor([1, 2])
    with torch.no_grad():
        assert_near(text(x, t, y, _context(2, [3, 4])), plain(x, t, y), 1e-6)
    with pytest.raises(ValueError, match="takes no text context"):
        plain(x, t, y, _context(2, [3, 4]))


def test_context_width_mismatch_and_config_checks():
    net = UNet(CFG)
    bad = TextContext(torch.randn(1, 3, D + 1), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, D + 1))
    with pytest.raises(ValueError, match="model.context_dim"):
        net(torch.randn(1, 3, 16, 16), torch.tensor([1]), context=bad)
    cfg = build_config("mnist", None, ["model.context_dim=8", "data.clusters=0", "model.channels=8",
                                       "model.channel_mults=[1, 2]"])
    assert build_model(cfg, (1, 28, 28)).cfg.context_dim == 8
    with pytest.raises(ConfigError, match="takes no text context"):
        build_model(build_config("moons", None, ["model.context_dim=8"]), (2,))
    with pytest.raises(ConfigError, match="model.context_dim must not be negative"):
        build_config("mnist", None, ["model.context_dim=-1"])


def test_cpu_bf16_cross_attention_paths_match(monkeypatch):
    """The bf16 CPU attention (chunked without autograd) honours the key padding mask like SDPA does."""
    from ddpmlab.models import layers

    monkeypatch.setattr(layers, "SCORES_PER_CHUNK", 16)
    q, k, v = torch.randn(6, 2, 64, 8), torch.randn(6, 2, 5, 8), torch.randn(6, 2, 5, 8)
    mask = (torch.arange(5)[None] < torch.tensor([1, 5, 3, 2, 4, 5])[:, None])[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.no_grad():
        out = layers.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert_near(out.float(), ref, 3e-2)


def test_guidance_batch_of_prompts_and_null_matches_separate_calls():
    """TextContext.cat([ctx, null]) in one forward gives what two forwards give (classifier-free guidance)."""
    net = _perturbed(UNet(CFG)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([20, 600])
    ctx = _context(2, [6, 3])
    null = TextContext(torch.zeros(2, 1, D), torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, D),
                       null=torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        both = net(torch.cat([x, x]), torch.cat([t, t]), context=TextContext.cat([ctx, null]))
        assert_near(both[:2], net(x, t, context=ctx), 1e-5)
        assert_near(both[2:], net(x, t), 1e-5)
