import numpy as np

import helpers


def test_deterministic_and_shaped_like_tgs():
    a = helpers.make_synthetic_dataset(50, seed=7)
    b = helpers.make_synthetic_dataset(50, seed=7)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert a.images.shape == (50, 101, 101) and a.images.dtype == np.uint8
    assert a.masks.shape == (50, 101, 101) and a.masks.dtype == bool
    c = helpers.make_synthetic_dataset(50, seed=8)
    assert not np.array_equal(a.images, c.images)


def test_coverage_mix_like_the_real_set():
    data = helpers.make_synthetic_dataset(1000)
    cov = helpers.coverage(data.masks)
    assert 0.33 < (cov == 0).mean() < 0.45
    classes = np.bincount(helpers.coverage_class(cov), minlength=11)
    assert (classes[1:] > 10).all(), classes  # slivers to full: every class is present
    assert (cov == 1).sum() > 5


def test_salt_differs_from_sediment_but_not_trivially():
    """Sediments are layered (steeper vertically than across), salt is not; brightness alone fails."""
    data = helpers.make_synthetic_dataset(200, seed=3)
    image = data.images.astype(float)
    down = np.abs(np.diff(image, axis=1))[:, :, :-1]
    across = np.abs(np.diff(image, axis=2))[:, :-1, :]
    salt = data.masks[:, :-1, :-1]
    assert down[salt].mean() / across[salt].mean() < 1.05 < 1.15 < down[~salt].mean() / across[~salt].mean()
    best = max(max(helpers.competition_score(data.masks, image < t),
                   helpers.competition_score(data.masks, image > t)) for t in range(40, 220, 10))
    assert best < 0.45


def test_ricker_wavelet_peak():
    w = helpers.ricker_wavelet(21, 2.0)
    assert w.argmax() == 10 and np.isclose(w.max(), 1.0)
