"""The benchmark runs from a clone: a smoke test on a small synthetic set."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)], cwd=BENCHMARKS.parent,
                          capture_output=True, text=True)


def test_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "bench"
    short = ["--data-dir", "synthetic", "--epochs", 1, "--steps-per-epoch", 2, "--budget-min", 5]
    done = _run("compare_recipes.py", *short, "--limit", 200, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["recipe"] for r in results] == ["reference", "series"]
    for r in results:
        assert r["train"] + r["val"] + r["held_out"] == 200 and 36 <= r["held_out"] <= 44
        assert 0 <= r["held_out_score"] <= 1 and r["train_images_per_s"] > 0 and r["peak_memory_mb"] > 0
    assert [r["epochs"] for r in results] == [1, 2] and results[1]["stage_epochs"] == [1, 1]
    assert (out / "series" / "lovasz" / "best.keras").is_file()  # the series scores its stage-2 model
    assert [len(r["per_epoch"]) for r in results] == [1, 2]  # held-out scored after every epoch of both stages
    assert len((out / "results.md").read_text().splitlines()) == 2 + 2  # header, rule, one row per recipe

    rescored = _run("compare_recipes.py", "--rescore", "--data-dir", "synthetic", "--out", out)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    series = json.loads((out / "series.json").read_text())
    assert series["rescored"] == [{k: results[1][k] for k in series["rescored"][0]}]  # earlier scores kept
    assert "min_peak" in series["postprocessing"] and series["per_epoch"] == results[1]["per_epoch"]
    assert _run("compare_recipes.py", "--rescore", "--out", tmp_path / "empty").returncode != 0

    # stage2_variants.py trains the run's stage 2 again: its baseline repeats the series' stage 2 exactly
    stage2 = ["--data-dir", "synthetic", "--from", out, "--epochs", 1, "--steps-per-epoch", 2]
    for variant in ("lovasz", "symmetric-lovasz"):
        done = _run("stage2_variants.py", *stage2, "--variant", variant, "--out", tmp_path / variant)
        assert done.returncode == 0, done.stderr[-3000:]
    baseline, symmetric = (json.loads((tmp_path / v / "scores.json").read_text())["epochs"]
                           for v in ("lovasz", "symmetric-lovasz"))
    with open(out / "series" / "lovasz" / "history.csv") as history:
        recorded = float(next(csv.DictReader(history))["val_loss"])
    assert baseline[0]["val_loss"] == pytest.approx(recorded, rel=1e-5)
    assert symmetric[0]["val_loss"] != pytest.approx(recorded, rel=1e-5)  # another loss, measured the same way
    assert all(0 <= row[f"score@{t}"] <= 1 for row in baseline + symmetric for t in (0.3, 0.5, 0.7))
    refused = _run("stage2_variants.py", *stage2, "--variant", "lovasz", "--out", tmp_path / "lovasz")
    assert refused.returncode != 0 and "exists" in refused.stderr

    again = _run("compare_recipes.py", *short, "--limit", 200, "--recipes", "series", "--out", out)
    assert again.returncode != 0 and "exists" in again.stderr  # a measured run is never overwritten
    other = tmp_path / "other"  # a folder holding a recipe measured on another --limit refuses to mix
    other.mkdir()
    (other / "reference.json").write_text(json.dumps(dict(results[0], limit=100)))
    refused = _run("compare_recipes.py", *short, "--limit", 200, "--recipes", "series", "--out", other)
    assert refused.returncode != 0 and "--limit" in refused.stderr and not (other / "series").exists()
