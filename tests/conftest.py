import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run faster on one thread than on two fighting over a shared CPU; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist():
    """The offline mnist-5k set (5,000 digits, sorted by label)."""
    from ddpmlab.config import DataConfig
    from ddpmlab.data import load_dataset

    return load_dataset(DataConfig(name="mnist-5k"))


@pytest.fixture(scope="module")
def mnist_features(mnist):
    """Features of 1000 even- and 1000 odd-indexed images (disjoint; random, since mnist-5k is sorted by label)."""
    from ddpmlab.metrics.features import select_features

    pick = torch.randperm(2500, generator=torch.Generator().manual_seed(0))[:1000]
    return select_features("mnist-5k", (1, 28, 28))(torch.cat([mnist.x[0::2][pick], mnist.x[1::2][pick]]))
