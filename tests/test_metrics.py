"""FID and KID against direct NumPy/SciPy computations on known distributions."""
import numpy as np
import pytest
import scipy.linalg
import torch

from cyclegan.metrics import (clean_resize, extract_features, fid_from_features, frechet_distance,
                              kid_from_features)


def scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_of_gaussians_matches_scipy_and_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_fid(mu1, s1, mu2, s2), rel=1e-8)
    # Isotropic Gaussians: ||mu1 - mu2||^2 + d (s1 + s2 - 2 sqrt(s1 s2)).
    assert frechet_distance(mu1, 4 * np.eye(6), mu2, np.eye(6)) == pytest.approx(
        ((mu1 - mu2) ** 2).sum() + 6 * (4 + 1 - 2 * 2), rel=1e-10)


def test_fid_of_samples_and_of_a_set_with_itself():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 8)), rng.normal(loc=0.5, size=(500, 8))
    expected = scipy_fid(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-7)
    assert abs(fid_from_features(x, x)) < 1e-8


def test_kid_matches_a_direct_mmd_and_is_zero_in_expectation_for_equal_distributions():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 5)), rng.normal(loc=1.0, size=(40, 5))
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    n = 40
    direct = ((k(x, x).sum() - np.trace(k(x, x))) / (n * (n - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1))
              - 2 * k(x, y).mean())
    mean, std = kid_from_features(x, y, subsets=3, subset_size=40)
    assert mean == pytest.approx(direct, rel=1e-10) and std == pytest.approx(0, abs=1e-12)
    same = kid_from_features(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), subsets=20, subset_size=100)
    assert abs(same[0]) < 3 * same[1] + 1e-3 and mean > 10 * abs(same[0])


def test_a_translation_equal_to_the_target_set_scores_zero():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(20)]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2))
    f = extract_features(net, images, size=64, batch_size=7)
    assert f.shape == (20, 32)
    other = [np.clip(i.astype(int) // 2 + 100, 0, 255).astype(np.uint8) for i in images]  # another "domain"
    g = extract_features(net, other, size=64)
    assert abs(fid_from_features(f, f)) < 1e-6
    kid_same = kid_from_features(f, f, subsets=20, subset_size=10)[0]
    kid_other = kid_from_features(f, g, subsets=20, subset_size=10)[0]
    assert fid_from_features(f, g) > 1e3 * max(abs(fid_from_features(f, f)), 1e-9)
    assert abs(kid_same) < 0.05 * kid_other  # unbiased estimate: ~0 for one distribution, not exactly 0


def test_clean_resize_works_in_floating_point():
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, 5:] = 255
    out = clean_resize(image, 17)
    assert out.shape == (17, 17, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255
    assert np.any((out % 1) != 0)  # not rounded to integers on the way
