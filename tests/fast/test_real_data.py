"""The real TGS files: every train.csv RLE must decode to exactly its mask PNG."""

import numpy as np
import pytest

import helpers
from support import real_data_dir

REAL = real_data_dir()
pytestmark = pytest.mark.skipif(REAL is None, reason="no real TGS data: set SALT_DATA_DIR or place it at ../shared/tgs-salt")


def test_every_rle_matches_its_mask_png():
    table = helpers.read_ids_csv(REAL / "train.csv", ["id", "rle_mask"])
    mismatches = []
    for sample_id, rle in zip(table["id"], table["rle_mask"]):
        mask = helpers.read_mask_png(REAL / "train" / "masks" / f"{sample_id}.png")
        if not np.array_equal(helpers.rle_decode(rle), mask):
            mismatches.append(sample_id)
        elif helpers.rle_encode(mask) != str(rle).strip():
            mismatches.append(sample_id + " (encode)")
    assert len(table) > 0 and not mismatches, mismatches[:5]


def test_loader_reads_the_real_folder():
    data = helpers.load_tgs_folder(REAL, limit=200)
    assert data.images.shape == (200, 101, 101) and data.images.dtype == np.uint8
    assert not np.isnan(data.depths).any()
    empty = (helpers.coverage(data.masks) == 0).mean()
    assert 0.25 < empty < 0.55
