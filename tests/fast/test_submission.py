"""Writing submission.csv for the test slices, and checking its format."""

import pytest

import helpers
from helpers import SaltDataError
from support import make_test_folder


@pytest.fixture(scope="module")
def tiny_model():
    return helpers.build_unet(base_filters=2)


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


def test_the_test_slices_are_read_and_predicted_a_chunk_at_a_time(tmp_path, tiny_model, monkeypatch):
    """What keeps the 18,000 test slices in bounded memory (benchmarks/submission_memory.py measures it)."""
    ids = make_test_folder(tmp_path, 25)
    read, predicted = [], []
    load, predict = helpers.load_test_images, helpers.predict_salt
    monkeypatch.setattr(helpers, "load_test_images", lambda folder, part: read.append(len(part)) or load(folder, part))
    monkeypatch.setattr(helpers, "predict_salt", lambda model, images, **kw: predicted.append(len(images))
                        or predict(model, images, **kw))
    assert helpers.write_submission(tiny_model, tmp_path, tmp_path / "s.csv", chunk=10) == 25
    assert read == predicted == [10, 10, 5]
    assert not (tmp_path / "s.csv.partial").exists()
    helpers.check_submission(tmp_path / "s.csv", ids)
