"""FID and KID against direct NumPy/SciPy computations on known distributions."""
import numpy as np
import pytest
import scipy.linalg
import torch

from cyclegan.core.metrics import clean_resize, extract_features, fid_from_features, frechet_distance, kid_from_features


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


def test_the_fid_inception_loads_a_weights_file_without_unpickling_and_gives_pool3_features(tmp_path, monkeypatch):
    from cyclegan.core.metrics import INCEPTION_ENV, get_extractor
    torch.manual_seed(0)
    from cyclegan.core.metrics import fid_inception_v3
    state = fid_inception_v3().state_dict()
    # Files exported before BatchNorm counted batches have no counters: they still load.
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "w.pth")
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "w.pth"))
    extractor, size = get_extractor("inception")
    assert size == 299
    images = [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    features = extract_features(extractor, images, size=size, batch_size=2)
    assert features.shape == (3, 2048) and np.isfinite(features).all() and (features >= 0).all()  # after ReLU


def test_missing_inception_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    from cyclegan.core.metrics import INCEPTION_URL, get_extractor
    monkeypatch.setenv("CYCLEGAN_INCEPTION_WEIGHTS", str(tmp_path / "nowhere" / "pt_inception.pth"))
    with pytest.raises(FileNotFoundError) as e:
        get_extractor("inception")
    assert str(tmp_path / "nowhere" / "pt_inception.pth") in str(e.value) and INCEPTION_URL in str(e.value)


def test_a_translation_that_lands_on_the_target_set_scores_zero_end_to_end(tmp_path):
    """Scorer on a dataset whose testB holds exactly G_A(testA): FID and KID of that direction are ~0."""
    import dataclasses

    from PIL import Image

    from cyclegan.core.config import Config
    from cyclegan.core.evaluate import Scorer
    rng = np.random.default_rng(4)
    for split in ("testA", "testB"):
        (tmp_path / split).mkdir()
    for i in range(40):
        image = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)  # dark A, bright B
        Image.fromarray(image).save(tmp_path / "testA" / f"{i}.png")
        Image.fromarray(255 - image).save(tmp_path / "testB" / f"{i}.png")  # B is the negative of A
    cfg = dataclasses.replace(Config(), dataroot=str(tmp_path), load_size=16, crop_size=16)
    negate = torch.nn.Conv2d(3, 3, 1)  # x -> -x in [-1, 1]: the exact A -> B (and B -> A) translation
    negate.weight.data = -torch.eye(3)[:, :, None, None]
    negate.bias.data.zero_()
    identity = torch.nn.Identity()
    identity.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))  # a device to find
    scorer = Scorer(cfg, "fid", extractor="tiny", max_images=40)
    exact = scorer(negate, negate)
    wrong = scorer(identity, identity)
    assert abs(exact["fid"]) < 1e-6 and wrong["fid"] > 0.1
    # KID compares a set with itself here: the unbiased estimate is ~0 (O(1/n), not exactly 0).
    assert abs(exact["kid"]) < 0.2 * wrong["kid"]
