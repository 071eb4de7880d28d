"""Self-guidance by k-means clusters (data.clusters): the clusters, their draws, and a run trained on them."""

import json

import pytest
import torch

from ddpmlab import checkpoint as ckpt
from ddpmlab.clusters import cluster_counts, draw_clusters, fit_clusters
from ddpmlab.config import build_config
from ddpmlab.errors import ConfigError

from helpers import tiny_image_config


def test_fit_clusters_finds_separated_groups_in_many_dimensions():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 300, generator=g) * 10  # 300 dimensions: the clustering runs on 50 PCs
    truth = torch.arange(600) % 3
    x = centres[truth] + torch.randn(600, 300, generator=g)
    found = fit_clusters(x, 3)
    # every true group maps to one cluster and no two groups share one
    pairs = {(int(t), int(f)) for t, f in zip(truth, found)}
    assert len(pairs) == 3 and len({f for _, f in pairs}) == 3
    assert torch.equal(found, fit_clusters(x, 3)), "the same data and seed give the same clusters"


def test_fit_clusters_refuses_more_clusters_than_items():
    with pytest.raises(ValueError, match="data.clusters = 6 needs between 2 and 5 clusters"):
        fit_clusters(torch.randn(5, 4), 6)


@pytest.mark.parametrize("n", [7, 100, 2000])
def test_draw_clusters_follows_the_cluster_sizes(n):
    counts = (50, 300, 150, 500)
    drawn = draw_clusters(counts, n)
    expected = torch.tensor(counts, dtype=torch.float64) * n / sum(counts)
    got = torch.bincount(drawn, minlength=4).double()
    assert (got - expected).abs().max() <= 2.0, (got, expected)


def test_a_sample_keeps_its_cluster_whatever_n_and_the_seed_changes_them():
    counts = (10, 20, 30, 40)
    assert torch.equal(draw_clusters(counts, 50), draw_clusters(counts, 500)[:50])
    assert not torch.equal(draw_clusters(counts, 50, seed=0), draw_clusters(counts, 50, seed=1))


def test_an_empty_cluster_is_never_drawn():
    assert 1 not in set(draw_clusters((5, 0, 5), 1000).tolist())


def test_clusters_take_one_label_each():
    assert build_config("mnist", None, ["data.clusters=20"]).model.num_classes == 20  # follows when unset
    with pytest.raises(ConfigError, match="needs model.num_classes = 20"):
        build_config("mnist", None, ["data.clusters=20", "model.num_classes=10"])
    with pytest.raises(ConfigError, match="at least 2"):
        build_config("mnist", None, ["data.clusters=1"])
    with pytest.raises(ConfigError, match="set data.clusters = 0"):
        build_config("mnist", None, ["model.context_dim=16"])


def test_a_guide_for_a_conditional_run_is_refused():
    with pytest.raises(ConfigError, match="set train.guide_at = 0"):
        build_config("mnist", None, ["train.guide_at=0.3"])


def test_a_clustered_run_trains_on_its_clusters_and_samples_them_by_size(tmp_path):
    from ddpmlab.sampling import class_labels, load_run, run_labels
    from ddpmlab.train import train

    cfg = tiny_image_config("data.clusters=4", "model.num_classes=4", "train.p_uncond=0.2", "train.steps=10")
    assert cfg.model.num_classes == 4
    train(cfg, tmp_path / "r", progress=False, log=lambda _: None)
    labels = ckpt.load_clusters(tmp_path / "r")
    assert labels.shape == (5000,) and set(labels.tolist()) == {0, 1, 2, 3}
    meta = json.loads((tmp_path / "r" / ckpt.META).read_text())
    assert meta["cluster_counts"] == list(cluster_counts(labels, 4))
    assert meta["class_names"] == ["cluster 0", "cluster 1", "cluster 2", "cluster 3"]

    run = load_run(tmp_path / "r")
    assert run.cluster_counts == tuple(meta["cluster_counts"])
    drawn = run_labels(run, 400)
    assert torch.equal(drawn, draw_clusters(run.cluster_counts, 400, run.cfg.sample.seed))
    assert torch.equal(class_labels(run, None, 400), drawn)
    assert class_labels(run, "all", 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # 'all': one block per cluster
    assert class_labels(run, "Cluster 2", 3).tolist() == [2, 2, 2]  # by name, as --class "cluster 2" gives it


def test_a_resumed_clustered_run_keeps_the_saved_clusters(tmp_path):
    from ddpmlab.train import train

    cfg = tiny_image_config("data.clusters=4", "model.num_classes=4", "train.steps=10")
    train(cfg, tmp_path / "r", progress=False, log=lambda _: None)
    # a permuted labelling stands in for a clustering that came out differently on another machine
    saved = (ckpt.load_clusters(tmp_path / "r") + 1) % 4
    ckpt.save_clusters(tmp_path / "r", saved)
    longer = tiny_image_config("data.clusters=4", "model.num_classes=4", "train.steps=20")
    train(longer, tmp_path / "r", resume=True, progress=False, log=lambda _: None)
    assert torch.equal(ckpt.load_clusters(tmp_path / "r"), saved)
    meta = json.loads((tmp_path / "r" / ckpt.META).read_text())
    assert meta["cluster_counts"] == list(cluster_counts(saved, 4))


def test_eval_of_a_clustered_run_reports_no_class_accuracy(tmp_path):
    from ddpmlab.evaluate import evaluate
    from ddpmlab.sampling import load_run
    from ddpmlab.train import train

    cfg = tiny_image_config("data.clusters=3", "model.num_classes=3", "train.steps=5")
    train(cfg, tmp_path / "r", progress=False, log=lambda _: None)
    result = evaluate(load_run(tmp_path / "r"), n=20, cache_dir=None, log=lambda _: None)
    assert result.conditional is None  # cluster indices are not the classifier's digits
    assert "classifier_accuracy_on_real" not in result.info


def test_more_clusters_than_items_is_one_line_before_anything_is_written(tmp_path):
    from ddpmlab.train import train

    with pytest.raises(ConfigError, match="data.clusters = 6000 needs between 2 and 5000 clusters .* lower it"):
        train(tiny_image_config("data.clusters=6000"), tmp_path / "r", progress=False, log=lambda _: None)
    assert not (tmp_path / "r").exists()
