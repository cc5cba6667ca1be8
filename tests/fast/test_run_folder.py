"""A run folder knows what its model was trained on: 03 records it, 03 run again and 04 refuse other data."""

import json

import pytest

import helpers


def test_a_model_trained_on_the_stand_in_is_not_scored_on_other_data(tmp_path, capsys):
    synthetic = helpers.make_synthetic_dataset(6, seed=0)
    helpers.check_trained_on(tmp_path, synthetic, record=True)  # 03, before it trains
    recorded = json.loads((tmp_path / "trained_on.json").read_text())
    assert recorded["source"] == synthetic.source and recorded["slices"] == 6
    helpers.check_trained_on(tmp_path, synthetic)  # 04 on the same data: silent
    helpers.check_trained_on(tmp_path, helpers.make_synthetic_dataset(6, seed=0), record=True)  # 03 again
    assert capsys.readouterr().out == ""
    other = helpers.make_synthetic_dataset(8, seed=1)  # a Kaggle token added later: other slices
    other.source = "the real TGS data (folder 'tgs-salt')"
    for record in (False, True):  # 04, and 03 run again in the same folder
        with pytest.raises(helpers.SaltDataError, match=r"holds a model trained on synthetic stand-in \(6 slices, "
                                                        r"seed 0\) \(6 slices\), but this run loaded the real TGS data .* "
                                                        r"\(8 slices\)\. Set SALT_RUN_DIR to a new folder"):
            helpers.check_trained_on(tmp_path, other, record=record)
    assert json.loads((tmp_path / "trained_on.json").read_text()) == recorded  # the record is never replaced


def test_a_folder_from_before_the_record_gets_a_warning_not_a_refusal(tmp_path, capsys):
    data = helpers.make_synthetic_dataset(6, seed=0)
    helpers.check_trained_on(tmp_path, data)  # nothing trained yet: nothing to say
    assert capsys.readouterr().out == ""
    (tmp_path / "best.keras").write_bytes(b"a model of before")
    helpers.check_trained_on(tmp_path, data)
    assert "does not record its data" in capsys.readouterr().out and not (tmp_path / "trained_on.json").exists()
    helpers.check_trained_on(tmp_path, data, record=True)  # 03 resuming it records the data from now on
    assert "does not record its data" in capsys.readouterr().out and (tmp_path / "trained_on.json").is_file()
