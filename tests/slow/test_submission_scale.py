"""Writing submission.csv for the 18,000 test slices in bounded memory."""

import tracemalloc

import pytest

import helpers
from support import make_test_folder


@pytest.fixture(scope="module")
def tiny_model():
    return helpers.build_unet(base_filters=2)


def peak_megabytes(model, folder, tmp_path):
    tracemalloc.start()
    helpers.write_submission(model, folder, tmp_path / "submission.csv", chunk=500)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def test_eighteen_thousand_images_in_bounded_memory(tmp_path_factory, tiny_model):
    small, large = tmp_path_factory.mktemp("small"), tmp_path_factory.mktemp("large")
    make_test_folder(small, 1500)
    ids = make_test_folder(large, 18000)
    peak_small = peak_megabytes(tiny_model, small, small)
    peak_large = peak_megabytes(tiny_model, large, large)
    # All 18,000 slices at once would be 18000*101*101 float32 = 700 MB; chunks of 500 stay near 60.
    assert peak_large < 150, f"peak {peak_large:.0f} MB"
    assert peak_large < peak_small * 1.5 + 10, (peak_small, peak_large)
    helpers.check_submission(large / "submission.csv", ids)
