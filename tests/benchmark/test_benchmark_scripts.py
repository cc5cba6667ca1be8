"""The benchmark's scripts and library: a smoke test from a clone on a small synthetic set, --set, intervals, FLOP counts."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import average_runs  # noqa: E402
import compare_recipes  # noqa: E402
import helpers  # noqa: E402
import levers  # noqa: E402
import recipes  # noqa: E402
import stage2_variants  # noqa: E402
from report import bootstrap_interval  # noqa: E402


def _run(script, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)], cwd=BENCHMARKS.parent,
                          capture_output=True, text=True)


@pytest.mark.slow
def refused(main, argv, capsys):
    """What a script's ``main(argv)`` says when it refuses, run in this process (no second start of Keras)."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    assert stop.value.code != 0
    return f"{stop.value.code} {capsys.readouterr().err}"


def test_benchmark_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    short = ["--data-dir", "synthetic", "--epochs", 1, "--steps-per-epoch", 2, "--budget-min", 5]
    done = _run("compare_recipes.py", *short, "--limit", 200, "--set", "finetune_learning_rate=0.0004", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["recipe"] for r in results] == ["reference", "series"]
    for r in results:
        assert r["train"] + r["val"] + r["held_out"] == 200 and 36 <= r["held_out"] <= 44
        assert 0 <= r["held_out_score"] <= 1 and r["train_images_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert len(r["held_out_per_image"]) == r["held_out"]
        assert np.mean(r["held_out_per_image"]) == pytest.approx(r["held_out_score"], abs=1e-4)
        low, high = r["held_out_ci95"]
        assert low <= r["held_out_score"] <= high
    assert [r["overrides"] for r in results] == [{}, {"finetune_learning_rate": 0.0004}]  # --set: the series only
    series_row = (out / "results.md").read_text().splitlines()[3]
    assert series_row.startswith("| series, finetune_learning_rate=0.0004 |")
    gain = results[1]["held_out_score"] - results[0]["held_out_score"]
    assert f"| {gain:+.4f} (" in series_row  # the gain over the reference, with its paired interval
    assert [r["epochs"] for r in results] == [1, 2] and results[1]["stage_epochs"] == [1, 1]
    assert (out / "series" / "lovasz" / "best.keras").is_file()  # the series scores its stage-2 model
    assert [len(r["per_epoch"]) for r in results] == [1, 2]  # held-out scored after every epoch of both stages
    assert len((out / "results.md").read_text().splitlines()) == 2 + 2  # header, rule, one row per recipe

    rescored = _run("compare_recipes.py", "--rescore", "--data-dir", "synthetic", "--out", out)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    series = json.loads((out / "series.json").read_text())
    assert series["rescored"] == [{k: results[1][k] for k in series["rescored"][0]}]  # earlier scores kept
    assert "min_peak" in series["postprocessing"] and series["per_epoch"] == results[1]["per_epoch"]
    assert "holds no measured recipe" in refused(compare_recipes.main, ["--rescore", "--out", tmp_path / "empty"], capsys)

    # stage2_variants.py trains the run's stage 2 again: its baseline repeats the series' stage 2 exactly
    stage2 = ["--data-dir", "synthetic", "--from", out, "--epochs", 1, "--steps-per-epoch", 2]
    for variant in ("lovasz", "symmetric-lovasz"):
        done = _run("stage2_variants.py", *stage2, "--variant", variant, "--out", tmp_path / variant)
        assert done.returncode == 0, done.stderr[-3000:]
    baseline, symmetric = (json.loads((tmp_path / v / "scores.json").read_text())["epochs"]
                           for v in ("lovasz", "symmetric-lovasz"))
    with open(out / "series" / "lovasz" / "history.csv") as history:
        recorded = float(next(csv.DictReader(history))["val_loss"])
    assert baseline[0]["val_loss"] == pytest.approx(recorded, rel=1e-5)  # --set's learning rate carried over
    assert symmetric[0]["val_loss"] != pytest.approx(recorded, rel=1e-5)  # another loss, measured the same way
    assert all(0 <= row[f"score@{t}"] <= 1 for row in baseline + symmetric for t in (0.3, 0.5, 0.7))
    assert "exists" in refused(stage2_variants.main, [*stage2, "--variant", "lovasz", "--out", tmp_path / "lovasz"], capsys)

    # average_stages.py: stage 2 alone is the series as measured (the script checks it), and every weight is scored
    averaged = _run("average_stages.py", "--data-dir", "synthetic", "--run", out)
    assert averaged.returncode == 0, averaged.stderr[-3000:]
    record = json.loads((out / "average_stages.json").read_text())
    assert [row["stage_two_weight"] for row in record["weights"]] == [1.0, 0.75, 0.5]
    assert record["weights"][0]["held_out_score"] == series["held_out_score"] == record["series_held_out_score"]
    assert record["chosen_weight"] in (1.0, 0.75, 0.5) and record["held_out"] == series["held_out"]
    assert all(len(row["held_out_per_image"]) == series["held_out"] for row in record["weights"])
    assert "| 1.00" in averaged.stdout and "paired gain over stage 2 alone" in averaged.stdout

    # average_runs.py: a second series (another training seed) on the same split, averaged with the first
    seed43 = tmp_path / "seed43"
    done = _run("compare_recipes.py", *short, "--limit", 200, "--recipes", "series", "--set", "seed=43", "--out", seed43)
    assert done.returncode == 0, done.stderr[-3000:]
    ensemble = tmp_path / "ensemble.json"
    averaged = _run("average_runs.py", "--data-dir", "synthetic", "--runs", out, seed43, "--out", ensemble)
    assert averaged.returncode == 0, averaged.stderr[-3000:]
    record = json.loads(ensemble.read_text())
    rows = {" + ".join(row["members"]): row for row in record["combinations"]}
    assert list(rows) == ["bench", "seed43", "bench + seed43"]
    assert rows["bench"]["held_out_score"] == series["held_out_score"]  # each run alone repeats its record
    assert rows["seed43"]["held_out_score"] == json.loads((seed43 / "series.json").read_text())["held_out_score"]
    assert [run["overrides"] for run in record["runs"]] == [{"finetune_learning_rate": 0.0004}, {"seed": 43}]
    assert all(len(row["held_out_per_image"]) == series["held_out"] for row in rows.values())
    assert "| bench + seed43 |" in averaged.stdout and "paired gain over bench alone" in averaged.stdout
    elsewhere = tmp_path / "elsewhere"  # a run on another split is refused before any model is loaded
    (elsewhere / "series").mkdir(parents=True)
    (elsewhere / "series" / "best.keras").write_bytes(b"")
    (elsewhere / "series.json").write_text(json.dumps(dict(series, seed=2027)))
    said = refused(average_runs.main, ["--data-dir", "synthetic", "--runs", out, elsewhere, "--out", ensemble], capsys)
    assert "--seed 2027" in said and "same held-out slices" in said

    again = refused(compare_recipes.main, [*short, "--limit", 200, "--recipes", "series", "--out", out], capsys)
    assert "exists" in again  # a measured run is never overwritten
    other = tmp_path / "other"  # a folder holding a recipe measured on another --limit refuses to mix
    other.mkdir()
    (other / "reference.json").write_text(json.dumps(dict(results[0], limit=100)))
    said = refused(compare_recipes.main, [*short, "--limit", 200, "--recipes", "series", "--out", other], capsys)
    assert "--limit" in said and not (other / "series").exists()


@pytest.mark.slow
def test_set_changes_only_known_fields_with_their_type_and_range(capsys):
    assert recipes.parse_overrides(["finetune_share=0.3", "batch_size=16"]) == {
        "finetune_share": 0.3, "batch_size": 16}
    for bad in ("finetune_share", "no_such_field=1", "batch_size=1.5", "epochs=3", "steps_per_epoch=4",
                "block=dense", "stage_one_loss=mse", "shift_pixels=-1", "upscale=3", "precision=float8",
                "finetune_share=1.5"):
        with pytest.raises(ValueError, match="--set"):
            recipes.parse_overrides([bad])
    # the levers by name, each as a typed value; the recorded mixed_precision=true is today's bf16 lever
    overrides = recipes.parse_overrides(["block=residual", "scse=true", "shift_pixels=8", "stage_one_loss=focal_dice",
                                         "empty_head=true", "mixed_precision=true"])
    assert overrides == dict(block="residual", scse=True, shift_pixels=8, stage_one_loss="focal_dice",
                             empty_head=True, precision="mixed_bfloat16")
    assert recipes.parse_overrides(["mixed_precision=false"]) == {"precision": "float32"}
    for name, (changes, _) in levers.LEVERS.items():
        flags = levers.set_flags(changes)
        assert recipes.parse_overrides(flags[1::2]) == changes, name
    said = refused(compare_recipes.main, ["--set", "finetune_share=0.3", "--recipes", "reference", "--out", "unused"], capsys)
    assert "--set" in said and not (BENCHMARKS.parent / "unused").exists()


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_slices():
    rng = np.random.default_rng(0)
    few, many = rng.random(100), rng.random(2500)
    (low_few, high_few), (low_many, high_many) = (bootstrap_interval(v) for v in (few, many))
    assert low_few < few.mean() < high_few and low_many < many.mean() < high_many
    assert (high_many - low_many) < (high_few - low_few) / 3  # width shrinks like 1 / sqrt(slices)
    assert bootstrap_interval(np.full(50, 0.7)) == pytest.approx((0.7, 0.7))


def test_paired_interval_cancels_the_difficulty_both_recipes_share():
    rng = np.random.default_rng(1)
    difficulty = rng.random(640)  # slices both recipes find equally hard
    better, worse = difficulty + 0.02, difficulty
    low, high = bootstrap_interval(better, paired_with=worse)
    assert low == pytest.approx(0.02) and high == pytest.approx(0.02)
    unpaired_low, unpaired_high = bootstrap_interval(better)
    assert unpaired_high - unpaired_low > 0.03
    with pytest.raises(ValueError, match="shape"):
        bootstrap_interval(better, paired_with=worse[:10])


def test_a_convolution_and_a_transposed_one_by_hand():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 2*8*8*3*3*1*4 = 4608
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, padding="same")(x)  # 2*8*8*2*2*4*2 = 4096
    model = keras.Model(inputs, x)
    assert recipes.conv_gflop_per_image(model, 8) * 1e9 == pytest.approx(4608 + 4096)


def test_the_series_unet_costs_about_1_15_gflop_per_slice():
    assert recipes.conv_gflop_per_image(helpers.build_unet(), helpers.PADDED_SIZE) == pytest.approx(1.154, abs=0.001)
    assert recipes.conv_gflop_per_image(helpers.build_unet(base_filters=8), helpers.PADDED_SIZE) < 0.3
