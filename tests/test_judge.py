"""The MNIST judge: recognizable share on real digits, noise and negatives; class balance; the eval hook."""

import json
import math
import struct

import pytest
import torch
from helpers import tiny_image_config

from ddpmlab.metrics import negatives as neg
from ddpmlab.metrics.judge import (REJECT, Judge, class_balance, heldout_digits, judge_for, judge_markdown,
                                   judge_path, judge_probs, judge_summary, load_judge, pure_noise, verdicts)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def judge() -> Judge:
    j = judge_for("mnist-5k", (1, 28, 28))
    assert j is not None
    return j


@pytest.fixture(scope="module")
def heldout():
    return heldout_digits()


# ---------------------------------------------------------------- the shipped judge on real data and on negatives


def test_real_held_out_digits_are_recognizable_and_correct(judge, heldout):
    x, y = heldout
    v = judge.verdicts(x)
    assert float((v < REJECT).double().mean()) >= 0.91  # 0.929 when the weights were written
    assert float((v == y).double().mean()) >= 0.91  # recognizable *and* called the right digit


def test_pure_noise_is_rejected(judge):
    assert float((judge.verdicts(pure_noise(400, seed=3)) < REJECT).double().mean()) <= 0.01


# the most a kind of held-out negative may pass as a digit: glued halves and superimposed digits are the hardest,
# and some of them do read as a digit
MOST_ACCEPTED = {"chimera": 0.35, "overlay": 0.35, "scribbled": 0.15}


@pytest.mark.parametrize("kind", list(neg.KINDS))
def test_each_kind_of_held_out_negative_is_mostly_rejected(judge, heldout, kind):
    x, y = heldout
    images, _ = neg.make_negatives(x, y, 100, torch.Generator().manual_seed(7), kinds=(kind,))
    assert float((judge.verdicts(images) < REJECT).double().mean()) <= MOST_ACCEPTED.get(kind, 0.06)


def test_calibration_reports_ceiling_above_floors(judge):
    c = judge.calibration()
    assert c["real_n"] == 1000 and c["negatives_n"] == 100 * len(neg.KINDS)
    assert c["real_share"] >= 0.91 and c["real_accuracy"] >= c["real_correct_share"] >= 0.91
    assert c["noise_share"] <= 0.01 and c["negatives_share"] <= 0.08
    assert set(c["negatives_share_by_kind"]) == set(neg.KINDS)


def test_judge_file_is_small_with_sorted_header_and_held_out_numbers():
    blob = judge_path("mnist").read_bytes()
    assert len(blob) < 700_000
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    assert list(header) == sorted(header)
    _, meta = load_judge("mnist")
    assert meta["dataset"] == "mnist-judge" and float(meta["real_share"]) >= 0.91
    assert float(meta["noise_share"]) <= 0.01


def test_judge_for_only_mnist_grayscale():
    assert judge_for("fashion-mnist", (1, 28, 28)) is None
    assert judge_for("mnist-5k", (3, 28, 28)) is None
    assert judge_for("mnist", (1, 28, 28)) is not None


# ---------------------------------------------------------------- verdicts and class balance on known inputs


def test_verdicts_need_a_digit_on_top_with_probability_at_least_the_threshold():
    p = torch.full((4, 11), 0.0)
    p[0, 3] = 0.95  # confident 3
    p[1, 3] = 0.85  # a 3, not confident enough
    p[2, 10] = 0.99  # rejected by the judge
    p[3, 7] = 0.9  # exactly at the threshold counts
    assert verdicts(p).tolist() == [3, REJECT, REJECT, 7]
    assert verdicts(p, threshold=0.8).tolist() == [3, 3, REJECT, 7]


def test_class_balance_of_a_known_histogram():
    counts = [30, 10, 10, 10, 10, 10, 10, 10, 0, 0]
    v = torch.cat([torch.full((c,), d) for d, c in enumerate(counts)] + [torch.full((10,), REJECT)])
    b = class_balance(v[torch.randperm(len(v))])
    assert b["n"] == 110 and b["recognizable"] == 100 and b["rejects"] == 10 and b["counts"] == counts
    assert b["recognizable_share"] == pytest.approx(100 / 110)
    assert b["max_abs_deviation"] == pytest.approx(0.2)  # 30/100 - 1/10
    assert b["total_variation"] == pytest.approx(0.5 * (0.2 + 0.1 + 0.1))
    assert b["chi2"] == pytest.approx((20 ** 2 + 10 ** 2 + 10 ** 2) / 10)
    assert b["chi2_p"] < 1e-8


def test_class_balance_uniform_and_all_rejected():
    b = class_balance(torch.arange(200) % 10)
    assert b["max_abs_deviation"] == pytest.approx(0) and b["chi2"] == pytest.approx(0)
    assert b["total_variation"] == pytest.approx(0) and b["chi2_p"] == pytest.approx(1)
    none = class_balance(torch.full((5,), REJECT))
    assert none["recognizable_share"] == 0 and none["rejects"] == 5 and math.isnan(none["total_variation"])


def test_markdown_and_summary_show_counts_and_floors(judge):
    x, _ = heldout_digits()
    r = judge.report(torch.cat([x[:50], pure_noise(50)]))
    assert 0.4 <= r["recognizable_share"] <= 0.6 and r["rejects"] >= 45
    md = "\n".join(judge_markdown(r))
    assert "Recognizable share" in md and "| reject |" in md and f"| {r['rejects']} |" in md
    assert "ceiling" in md and "floor" in md
    assert "recognizable share" in judge_summary(r)


def test_probs_are_a_distribution_and_resized_inputs_work(judge):
    x = torch.nn.functional.interpolate(heldout_digits()[0][:8], size=(32, 32), mode="bilinear")
    p = judge_probs(judge.net, x)
    assert p.shape == (8, 11) and torch.allclose(p.sum(1), torch.ones(8), atol=1e-5)
    assert judge_probs(judge.net, x[:0]).shape == (0, 11)


# ---------------------------------------------------------------- the negatives


def test_negatives_are_seeded_in_range_and_in_equal_shares(heldout):
    x, y = heldout
    a, ka = neg.make_negatives(x, y, 45, torch.Generator().manual_seed(0))
    b, kb = neg.make_negatives(x, y, 45, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(ka, kb)
    assert a.shape == (45, 1, 28, 28) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.bincount(ka, minlength=len(neg.KINDS)).tolist() == [5, 5, 5, 5, 5, 4, 4, 4, 4, 4]
    c, _ = neg.make_negatives(x, y, 45, torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_erase_removes_ink_and_chimera_mixes_two_classes(heldout):
    x, y = heldout
    gen = torch.Generator().manual_seed(0)
    erased = neg.erase(x, y, 200, gen)
    assert float(erased.sum()) < 0.8 * float(neg.to_ink(x).mean() * 200 * 784)
    blend = neg.chimera(x, y, 50, gen)
    assert torch.all(blend.amax(dim=(1, 2, 3)) > 0.5)  # ink from the real digits survives


def test_blur_keeps_mass_and_zero_sigma_is_identity():
    ink = torch.zeros(2, 1, 28, 28)
    ink[:, :, 14, 14] = 1.0
    assert torch.equal(neg.blur(ink, torch.zeros(2)), ink)
    out = neg.blur(ink, torch.tensor([1.0, 2.0]))
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    assert float(out[0, 0, 14, 14]) > float(out[1, 0, 14, 14])  # the wider blur spreads the dot more


# ---------------------------------------------------------------- the eval hook


def test_eval_of_an_mnist_run_reports_the_judge_beside_fid(tmp_path):
    from ddpmlab.evaluate import evaluate
    from ddpmlab.models import build_model
    from ddpmlab.sampling import LoadedRun
    from ddpmlab.schedules import schedule_from_config

    cfg = tiny_image_config()
    run = LoadedRun(tmp_path, cfg, build_model(cfg, (1, 28, 28)).eval(), schedule_from_config(cfg.diffusion),
                    (1, 28, 28), tuple(str(d) for d in range(10)), 0, torch.device("cpu"))
    lines: list[str] = []
    r = evaluate(run, 16, "ddim", 3, cache_dir=tmp_path / "cache", log=lines.append)
    j = r.judge
    assert j["n"] == 16 and j["recognizable"] + j["rejects"] == 16
    assert j["recognizable_share"] <= 0.25  # an untrained network draws noise, which the judge rejects
    assert j["calibration"]["real_share"] >= 0.91 and len(j["judge_sha256"]) == 12
    assert any(line.startswith("recognizable share") for line in lines)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["judge"]["counts"] == j["counts"]
    md = (tmp_path / "eval.md").read_text()
    assert "## Recognizable digits" in md and md.index("FID") < md.index("Recognizable share")
