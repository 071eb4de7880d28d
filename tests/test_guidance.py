import torch

from ddpmlab.guidance import drop_labels, guided


def test_guided_is_one_batched_forward_with_the_lecture_convention():
    calls = []

    def net(x, t, y):
        calls.append(x.shape[0])
        return x * 0 + y.float()[:, None]  # output = the label value

    f = guided(net, w=3.0, null_label=10)
    y = torch.tensor([2, 5])
    out = f(torch.zeros(2, 4), torch.tensor([7, 7]), y)
    assert calls == [4]  # cond and uncond halves in one call
    expected = (1 + 3.0) * y.float() - 3.0 * 10
    assert torch.allclose(out, expected[:, None].expand(2, 4))
    assert guided(net, 0.0, 10) is net


def test_guided_output_equals_guided_eps_for_x0_and_v_models():
    """Guidance on raw outputs equals guidance on eps, whatever the prediction target."""
    from ddpmlab.diffusion import split_prediction
    from ddpmlab.schedules import make_schedule

    s = make_schedule("cosine", 100)
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([10, 50, 90])
    a, sg = s.at(s.alpha, t, x), s.at(s.sigma, t, x)
    out_c, out_u = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    w = 2.5
    for kind in ("eps", "x0", "v"):
        eps_c = split_prediction(kind, out_c, x, a, sg).eps
        eps_u = split_prediction(kind, out_u, x, a, sg).eps
        eps_g = split_prediction(kind, (1 + w) * out_c - w * out_u, x, a, sg).eps
        assert torch.allclose(eps_g, (1 + w) * eps_c - w * eps_u)


def test_drop_labels_rate_and_null_value():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(20000, dtype=torch.long)
    out = drop_labels(y, 0.1, 7, g)
    frac = (out == 7).float().mean().item()
    assert 0.09 < frac < 0.11
    assert set(out.unique().tolist()) == {0, 7}
    assert torch.equal(drop_labels(y, 0.0, 7, g), y)
