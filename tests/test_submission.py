"""Writing submission.csv for the 18,000 test slices in bounded memory, and checking it."""

import shutil
import tracemalloc

import numpy as np
import pytest

import helpers
from conftest import write_png
from helpers import SaltDataError


def make_test_folder(folder, count, distinct=16):
    """``count`` test PNGs (RGB, equal channels) as the real test set has them, made from a few slices."""
    data = helpers.make_synthetic_dataset(distinct, seed=5)
    images = folder / "test" / "images"
    sources = []
    for k in range(distinct):
        path = images / f"src{k:02d}.png"
        write_png(path, np.repeat(data.images[k][..., None], 3, axis=2))
        sources.append(path)
    for i in range(count - distinct):
        shutil.copyfile(sources[i % distinct], images / f"t{i:05d}.png")
    return helpers.list_test_ids(folder)


@pytest.fixture(scope="module")
def tiny_model():
    return helpers.build_unet(base_filters=2)


def peak_megabytes(model, folder, tmp_path):
    tracemalloc.start()
    helpers.write_submission(model, folder, tmp_path / "submission.csv", chunk=500)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


@pytest.mark.slow
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


def test_submission_format_checks(tmp_path, tiny_model):
    ids = make_test_folder(tmp_path, 20)
    assert helpers.write_submission(tiny_model, tmp_path, tmp_path / "s.csv", chunk=7) == 20
    helpers.check_submission(tmp_path / "s.csv", ids)
    with pytest.raises(SaltDataError, match="1 ids missing"):
        helpers.check_submission(tmp_path / "s.csv", ids + ["extra"])
    lines = (tmp_path / "s.csv").read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join(lines[:4] + [f"{ids[3]},5 2 1 1"]) + "\n")
    with pytest.raises(SaltDataError, match="line 5: RLE"):
        helpers.check_submission(tmp_path / "bad.csv", ids[:4])
    (tmp_path / "header.csv").write_text("id,mask\n")
    with pytest.raises(SaltDataError, match="missing column"):
        helpers.check_submission(tmp_path / "header.csv", [])
