import dataclasses

import pytest
import torch

from ddpmlab.config import Config, ModelConfig
from ddpmlab.errors import ConfigError
from ddpmlab.models import MLP, MLPConfig, SimpleUnet, TinyCNN, UNet, UNetConfig, build_model


@pytest.mark.parametrize("size,mults,attn", [(28, (1, 2, 2), (7,)), (32, (1, 2, 2), (16,)), (64, (1, 1, 2, 2), (16,))])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("classes", [0, 10])
def test_unet_output_shape_matches_input(size, mults, attn, channels, classes):
    net = UNet(UNetConfig(in_channels=channels, image_size=size, channels=16, channel_mults=mults,
                          attention_resolutions=attn, num_classes=classes, dropout=0.1))
    x = torch.randn(2, channels, size, size)
    y = torch.tensor([3, 7]) if classes else None
    assert net(x, torch.tensor([1, 500]), y).shape == x.shape
    if classes:  # y=None means the null label
        assert net(x, torch.tensor([1, 500])).shape == x.shape


def test_every_unet_parameter_receives_gradient():
    net = UNet(UNetConfig(in_channels=3, image_size=16, channels=16, channel_mults=(1, 2),
                          attention_resolutions=(8,), num_classes=4))
    with torch.no_grad():  # move zero-initialised output layers off zero so every path carries gradient
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = net(torch.randn(3, 3, 16, 16), torch.tensor([1, 10, 100]), torch.tensor([0, 1, 4]))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_class_label_changes_output():
    net = UNet(UNetConfig(image_size=16, channels=16, channel_mults=(1, 2), attention_resolutions=(), num_classes=3))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([100])
    assert not torch.allclose(net(x, t, torch.tensor([0])), net(x, t, torch.tensor([1])))


def test_unet_rejects_size_it_cannot_halve():
    with pytest.raises(ValueError, match="cannot be halved"):
        UNet(UNetConfig(image_size=28, channel_mults=(1, 2, 2, 2)))


def test_build_model_turns_bad_size_into_config_error():
    cfg = dataclasses.replace(Config(), model=ModelConfig(channel_mults=(1, 2, 2, 2)))
    with pytest.raises(ConfigError, match="image size 28"):
        build_model(cfg, (1, 28, 28))


def test_mlp_and_tutorial_networks_shapes():
    mlp = MLP(MLPConfig(num_classes=2))
    assert mlp(torch.randn(5, 2), torch.randint(1, 100, (5,)), torch.tensor([0, 1, 0, 1, 2])).shape == (5, 2)
    tiny = TinyCNN(1, 16, T=30)
    assert tiny(torch.randn(2, 1, 28, 28), torch.tensor([1, 30])).shape == (2, 1, 28, 28)
    su = SimpleUnet(1, (8, 16, 32, 64, 128))
    assert su(torch.randn(2, 1, 32, 32), torch.tensor([1, 200])).shape == (2, 1, 32, 32)


def test_simpleunet_preset_size_matches_tutorial():
    from ddpmlab.config import load_preset
    from ddpmlab.models import count_parameters

    cfg = load_preset("tutorial-simpleunet")
    n = count_parameters(build_model(cfg, (1, 32, 32)))
    assert 60e6 < n < 64e6  # the tutorial's 64..1024-channel SimpleUnet has about 62M parameters


def test_sampling_shortcuts_give_the_training_paths_output(monkeypatch):
    """Without autograd on the CPU, attention runs in chunks and upsampling by repeat_interleave (both faster
    there); in bf16 the network must give what the autograd paths give."""
    from ddpmlab.models import layers

    monkeypatch.setattr(layers, "SCORES_PER_CHUNK", 64)  # chunk even this small network's attention
    net = UNet(UNetConfig(image_size=16, channels=16, channel_mults=(1, 2), attention_resolutions=(8,), heads=2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(6, 1, 16, 16), torch.arange(6) * 100 + 1
    calls = []
    monkeypatch.setattr(layers, "matmul_attention", lambda *a, f=layers.matmul_attention: calls.append(1) or f(*a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with_grad = net(x, t).float()
        attention_calls = len(calls)
        with torch.no_grad():
            without = net(x, t).float()
    assert len(calls) - attention_calls > attention_calls  # the no-grad pass split attention into chunks
    torch.testing.assert_close(without, with_grad.detach(), rtol=0.02, atol=0.02)
    up = layers.Upsample(4)
    z = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        assert torch.equal(up(z), up.conv(torch.nn.functional.interpolate(z, scale_factor=2.0, mode="nearest")))
