"""Mode coverage, classifier features, Fréchet distance, k-NN precision/recall and class histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from sklearn.datasets import load_digits

from genlab.checks import ConfigError
from genlab.metrics.classifier import FeatureClassifier, load_classifier, save_classifier, train_classifier
from genlab.metrics.features import (
    ClassHistogram,
    ClassifierSampleMetrics,
    class_histogram_stats,
    knn_precision_recall,
)
from genlab.metrics.modes import PROTOCOL_SAMPLES, ModeCoverage, mode_histogram_kl


def ring(k: int = 8, radius: float = 2.0) -> torch.Tensor:
    a = torch.arange(k) * 2 * math.pi / k
    return radius * torch.stack([a.cos(), a.sin()], 1)


# -- mode coverage ------------------------------------------------------------------------------
def test_samples_on_three_modes_give_three_modes_and_log_kl() -> None:
    centers = ring()
    metric = ModeCoverage(centers, std=0.02)
    on_modes = centers[[0, 2, 5]].repeat(100, 1) + 0.01  # 0.014 from the centre: inside 3 std = 0.06
    far = torch.zeros(50, 2)  # the ring's centre, 2 away from every mode
    metric.update(on_modes)
    metric.update(far)
    out = metric.compute()
    assert out["modes"].item() == 3
    assert out["hq"].item() == pytest.approx(300 / 350)
    assert out["mode_kl"].item() == pytest.approx(math.log(8 / 3), rel=1e-6)


def test_mode_kl_matches_scipy_and_threshold_counts() -> None:
    counts = torch.tensor([50, 30, 20, 0, 1, 0, 0, 0])
    expected = scipy.stats.entropy(counts.numpy() / counts.sum().item(), np.full(8, 1 / 8))
    assert mode_histogram_kl(counts).item() == pytest.approx(expected, rel=1e-6)
    assert mode_histogram_kl(torch.full((25,), 4)).item() == pytest.approx(0.0, abs=1e-7)
    assert mode_histogram_kl(torch.zeros(8, dtype=torch.long)).item() == pytest.approx(math.log(8))
    centers = ring()
    points = torch.cat([centers[0].repeat(20, 1), centers[1].repeat(19, 1), centers[2].repeat(1, 1)])
    loose, strict = ModeCoverage(centers, 0.02), ModeCoverage(centers, 0.02, min_count=20)
    loose.update(points)
    strict.update(points)
    assert loose.compute()["modes"].item() == 3
    assert strict.compute()["modes"].item() == 1


def test_true_mixture_samples_cover_every_mode_with_the_chi2_hq_rate() -> None:
    """Exact samples: P(||e|| < 3 sigma) for 2-D Gaussian noise is 1 - exp(-9/2) = 0.9889."""
    g = torch.Generator().manual_seed(0)
    axis = torch.arange(-4.0, 5.0, 2.0)
    centers = torch.cartesian_prod(axis, axis)
    comp = torch.randint(25, (PROTOCOL_SAMPLES,), generator=g)
    x = centers[comp] + 0.05 * torch.randn(PROTOCOL_SAMPLES, 2, generator=g)
    metric = ModeCoverage(centers, std=0.05)
    for chunk in x.split(1000):
        metric.update(chunk)
    out = metric.compute()
    assert out["modes"].item() == 25
    assert out["hq"].item() == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert out["mode_kl"].item() < 0.02
    metric.reset()
    metric.update(centers[:1])
    assert metric.compute()["modes"].item() == 1


def test_mode_coverage_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="std"):
        ModeCoverage(ring(), std=0.0)
    with pytest.raises(ConfigError, match="min_count"):
        ModeCoverage(ring(), std=0.1, min_count=0)


# -- precision / recall ---------------------------------------------------------------------------
def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(a: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]

    def inside(points: np.ndarray, centers: np.ndarray, r: np.ndarray) -> float:
        d = np.linalg.norm(points[:, None] - centers[None], axis=-1)
        return float(np.mean([(row <= r).any() for row in d]))

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_knn_precision_recall_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 5))
    fake = rng.normal(loc=0.7, scale=0.6, size=(90, 5))
    p, r = knn_precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=3)
    ep, er = brute_force_precision_recall(real, fake, 3)
    assert p.item() == pytest.approx(ep)
    assert r.item() == pytest.approx(er)
    assert 0 < r.item() < 1  # a narrower fake distribution misses part of the real one


def test_precision_recall_extremes() -> None:
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    p, r = knn_precision_recall(x, x.clone(), k=3)
    assert p.item() == 1.0 and r.item() == 1.0
    p, r = knn_precision_recall(x, x + 100.0, k=3)
    assert p.item() == 0.0 and r.item() == 0.0


# -- classifier and image metrics -----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def trained(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[FeatureClassifier, float]:
    x, y = digits
    return train_classifier(x, y, num_classes=10, steps=300, batch_size=64, lr=3e-3, max_samples=None, seed=0)


def test_classifier_learns_digits_and_round_trips(trained: tuple[FeatureClassifier, float], tmp_path) -> None:
    net, acc = trained
    assert acc > 0.85
    path = save_classifier(net, tmp_path / "feature_classifier.pt", acc)
    loaded, acc2 = load_classifier(path)
    assert acc2 == acc
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded.features(x), net.features(x))
    assert loaded.features(x).shape == (5, loaded.num_features)
    # Flat square data is viewed as one-channel images.
    assert FeatureClassifier((64,), 10)(torch.rand(3, 64)).shape == (3, 10)
    with pytest.raises(ConfigError, match="data_shape"):
        FeatureClassifier((2,), 3)


def test_class_histogram_counts_classes_and_entropy() -> None:
    out = class_histogram_stats(torch.tensor([25, 25, 25, 25, 0, 0, 0, 0, 0, 0]), min_share=0.02)
    assert out["classes"].item() == 4
    assert out["class_entropy"].item() == pytest.approx(math.log(4))
    out = class_histogram_stats(torch.tensor([97, 1, 1, 1] + [0] * 6), min_share=0.02)
    assert out["classes"].item() == 1
    expected = scipy.stats.entropy(np.array([97, 1, 1, 1]) / 100)
    assert out["class_entropy"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU units: singular covariances
def test_image_metrics_on_real_digits(trained: tuple[FeatureClassifier, float], digits) -> None:
    """Two halves of the real data: small FD, high precision/recall, all classes; one class alone: few classes."""
    net, _ = trained
    x, y = digits
    metrics = ClassifierSampleMetrics(net, k=3)
    metrics.update_real(x[:800])
    metrics.update_fake(x[800:1600])
    good = metrics.compute()
    assert good["classes"].item() == 10
    assert good["class_entropy"].item() > 0.95 * math.log(10)
    assert good["precision"].item() > 0.6 and good["recall"].item() > 0.6
    # The Fréchet distance equals the closed form on the classifier's features.
    fr = net.features(x[:800]).double().numpy()
    ff = net.features(x[800:1600]).double().numpy()
    mu_r, mu_f = fr.mean(0), ff.mean(0)
    cr, cf = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    expected = np.sum((mu_r - mu_f) ** 2) + np.trace(cr + cf - 2 * scipy.linalg.sqrtm(cr @ cf).real)
    assert good["fd"].item() == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # reset keeps the real set; a generator that only draws zeros is caught by every metric.
    metrics.reset()
    zeros = x[800:][y[800:] == 0]
    metrics.update_fake(zeros)
    bad = metrics.compute()
    assert bad["classes"].item() <= 2
    assert bad["class_entropy"].item() < 0.5
    assert bad["recall"].item() < 0.3
    assert bad["fd"].item() > 3 * good["fd"].item()


def test_class_histogram_metric_threshold(trained: tuple[FeatureClassifier, float], digits) -> None:
    net, _ = trained
    x, _ = digits
    with pytest.raises(ConfigError, match="min_class_share"):
        ClassHistogram(net, min_share=1.5)
    hist = ClassHistogram(net, min_share=1.0)
    hist.update(x[:100])
    assert hist.compute()["classes"].item() == 0
