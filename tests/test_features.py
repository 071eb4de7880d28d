"""Feature extractors and the shipped classifiers (metrics/features.py, metrics/accuracy.py)."""

import pytest
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import DEBIAN_FASHION_MNIST, load_dataset
from ddpmlab.errors import ConfigError
from ddpmlab.metrics.accuracy import class_accuracy
from ddpmlab.metrics.features import load_classifier, mnist_5k_heldout, select_features


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, restored afterwards


def test_mnist_classifier_is_accurate_on_its_held_out_images(mnist):
    net, meta = load_classifier("mnist")
    held = mnist_5k_heldout(mnist.y)
    assert int(held.sum()) == 1000 and torch.bincount(mnist.y[held]).tolist() == [100] * 10
    with torch.no_grad():
        acc = class_accuracy(net(mnist.x[held]), mnist.y[held], 10)
    assert acc["accuracy"] > 0.95
    assert float(meta["test_accuracy"]) == pytest.approx(acc["accuracy"], abs=1e-4)



@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shipped_weights_are_small_and_byte_reproducible(name):
    """Under 2 MB, and the safetensors header is JSON with sorted keys (what benchmarks/train_classifier.py
    writes, so that equal weights give equal bytes whatever order safetensors' hash map chose)."""
    import json
    import struct

    from ddpmlab.metrics.features import weights_path

    blob = weights_path(name).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8 : 8 + n].rstrip(b" ")
    assert len(blob) < 2e6
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    meta = json.loads(header)["__metadata__"]
    assert meta["dataset"] == name and json.loads(meta["settings"])["seed"] == 0


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_classifier_is_accurate_on_the_test_split():
    test = load_dataset(DataConfig(name="fashion-mnist"), "test")
    net, meta = load_classifier("fashion-mnist")
    with torch.no_grad():
        acc = class_accuracy(net(test.x[:2000]), test.y[:2000], 10)["accuracy"]
    assert acc > 0.88 and float(meta["test_accuracy"]) > 0.9


def test_classifier_features_have_unit_scale_on_real_data(mnist_features):
    assert mnist_features.shape == (2000, 128)
    assert 0.7 < float(mnist_features.var(0).mean()) < 1.3


def test_class_accuracy_per_class():
    logits = torch.eye(3)[[0, 1, 2, 2]]
    acc = class_accuracy(logits, torch.tensor([0, 1, 1, 2]), 4)
    assert acc["accuracy"] == 0.75 and acc["per_class"] == [1.0, 0.5, 1.0, None]


def test_inception_loads_a_user_state_dict(tmp_path):
    """A randomly initialised inception_v3 saved as safetensors loads and gives 2048-d features of any image."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False)  # the aux head is ignored on load
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "inc.safetensors"))
    phi = select_features("mnist-5k", (1, 28, 28), "auto", tmp_path / "inc.safetensors")  # weights given: Inception
    feats = phi(torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert phi.comparable and phi.key.startswith("inception-")
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not an Inception-v3 state dict"):
        select_features("cifar10", (3, 32, 32), "inception", tmp_path / "other.safetensors")


def test_pth_state_dicts_load_only_through_the_safe_loader(tmp_path):
    from ddpmlab.metrics.features import load_state_dict_file

    sd = {"a.weight": torch.ones(2, 2)}
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "nested.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "plain.pth")["a.weight"], sd["a.weight"])
    assert set(load_state_dict_file(tmp_path / "nested.pt")) == {"a.weight"}
    torch.save({"evil": ExecOnLoad()}, tmp_path / "evil.pth")
    for bad in ("evil.pth", "missing.pth"):
        with pytest.raises(ConfigError):
            load_state_dict_file(tmp_path / bad)
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="safetensors, .pth or .pt"):
        load_state_dict_file(tmp_path / "w.ckpt")


class ExecOnLoad:
    """A pickle that would run code when unpickled by an unsafe loader."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unsafe load')",))


def test_feature_selection_fallbacks():
    pixels = select_features("cifar10", (3, 32, 32))
    assert pixels.key.startswith("pixels") and not pixels.comparable
    assert pixels(torch.zeros(4, 3, 64, 64)).shape == (4, 256)
    with pytest.raises(ConfigError, match="inception-weights"):
        select_features("cifar10", (3, 32, 32), "inception")
    with pytest.raises(ConfigError, match="no shipped classifier"):
        select_features("cifar10", (3, 32, 32), "classifier")
    assert select_features("fashion-mnist", (1, 28, 28)).key.startswith("classifier-fashion-mnist")
