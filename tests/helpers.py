"""Tiny configs shared by the tests."""

from ddpmlab.config import build_config


def tiny_image_config(*extra: str):
    """A 2-level U-Net of width 8 on the MNIST subset, a few steps."""
    return build_config("mnist", None, [
        "model.channels=8", "model.channel_mults=[1, 2]", "model.attention_resolutions=[14]",
        "train.steps=20", "train.batch_size=16", "train.log_every=10", "train.ckpt_every=10",
        "train.sample_every=0", "diffusion.T=100", "sample.steps=5", "train.precision='fp32'",
        "sample.precision='fp32'", *extra,
    ])


def moons_config(*extra: str):
    return build_config("moons", None, ["train.log_every=50", "train.ckpt_every=1000", *extra])
