"""The benchmarks run from a clone (smoke test on a small synthetic set), and the Lovász loss is right."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from lovasz_stage import lovasz_hinge_loss  # noqa: E402


def _probs_from_logits(logits):
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def test_lovasz_hinge_equals_jaccard_loss_at_unit_errors():
    # Hinge errors of exactly 1 on a set M of pixels and 0 elsewhere: the Lovász extension
    # then equals the Jaccard loss of M, |M| / |salt ∪ M|, image by image.
    rng = np.random.default_rng(3)
    truth = rng.random((6, 12, 12, 1)) < np.array([0, 0.05, 0.3, 0.6, 1, 0.5]).reshape(6, 1, 1, 1)
    wrong = rng.random(truth.shape) < np.array([0.1, 0, 0.2, 0.05, 0.3, 0.5]).reshape(6, 1, 1, 1)
    logits = np.where(wrong, 0.0, np.where(truth, 1.0, -1.0))
    expected = [m.sum() / (t | m).sum() if (t | m).any() else 0.0 for t, m in zip(truth, wrong)]
    for i in range(6):
        got = float(lovasz_hinge_loss(truth[i:i + 1].astype(np.float32), _probs_from_logits(logits[i:i + 1])))
        assert abs(got - expected[i]) < 1e-4, (i, got, expected[i])
    batch = float(lovasz_hinge_loss(truth.astype(np.float32), _probs_from_logits(logits)))
    assert abs(batch - np.mean(expected)) < 1e-4


def test_lovasz_hinge_grows_with_the_margin_of_a_wrong_pixel():
    truth = np.zeros((1, 8, 8, 1), np.float32)
    truth[0, :4] = 1
    logits = np.where(truth > 0, 3.0, -3.0)
    assert float(lovasz_hinge_loss(truth, _probs_from_logits(logits))) < 1e-4
    for wrong_logit in (0.5, -0.5, -2.0):  # a salt pixel pushed towards 'no salt': hinge error 0.5, 1.5, 3
        bad = logits.copy()
        bad[0, 0, 0, 0] = wrong_logit
        # one pixel of 32 salt pixels wrong: its error times the Jaccard loss of that one pixel, 1/32
        expected = (1.0 - wrong_logit) / 32
        assert abs(float(lovasz_hinge_loss(truth, _probs_from_logits(bad))) - expected) < 1e-4


def _run(script, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)], cwd=BENCHMARKS.parent,
                          capture_output=True, text=True)


def test_benchmark_and_lovasz_stage_run_end_to_end(tmp_path):
    out = tmp_path / "bench"
    short = ["--data-dir", "synthetic", "--epochs", 1, "--steps-per-epoch", 2, "--budget-min", 5]
    done = _run("compare_recipes.py", *short, "--limit", 200, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["recipe"] for r in results] == ["reference", "series"]
    for r in results:
        assert r["train"] + r["val"] + r["held_out"] == 200 and 36 <= r["held_out"] <= 44 and r["epochs"] == 1
        assert 0 <= r["held_out_score"] <= 1 and r["train_images_per_s"] > 0 and r["peak_memory_mb"] > 0
    assert len((out / "results.md").read_text().splitlines()) == 2 + 2  # header, rule, one row per recipe

    again = _run("compare_recipes.py", *short, "--limit", 200, "--recipes", "series", "--out", out)
    assert again.returncode != 0 and "exists" in again.stderr  # a measured run is never overwritten
    other = tmp_path / "other"  # a folder holding a recipe measured on another --limit refuses to mix
    other.mkdir()
    (other / "reference.json").write_text(json.dumps(dict(results[0], limit=100)))
    refused = _run("compare_recipes.py", *short, "--limit", 200, "--recipes", "series", "--out", other)
    assert refused.returncode != 0 and "--limit" in refused.stderr and not (other / "series").exists()

    stage = _run("lovasz_stage.py", "--from", out, "--data-dir", "synthetic", "--epochs", 1,
                 "--steps-per-epoch", 2, "--budget-min", 5)
    assert stage.returncode == 0, stage.stderr[-3000:]
    lovasz = json.loads((out / "lovasz.json").read_text())
    assert lovasz["epochs"] == 1 and lovasz["first_stage_held_out_score"] == results[1]["held_out_score"]
    assert 0 <= lovasz["held_out_score"] <= 1 and (out / "lovasz" / "best.keras").is_file()
    assert _run("lovasz_stage.py", "--from", out, "--data-dir", "synthetic").returncode != 0  # not twice


def test_lovasz_stage_names_the_missing_first_stage(tmp_path):
    missing = _run("lovasz_stage.py", "--from", tmp_path, "--data-dir", "synthetic")
    assert missing.returncode != 0 and "series.json" in missing.stdout + missing.stderr
