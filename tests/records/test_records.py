"""The committed benchmark records (benchmarks/results/) are what the READMEs report, row by row.

The dated record, with every table the tests check, is benchmarks/RECORD.md; which record pairs
with which, and each record's split, machine, backend and budget, is benchmarks/results/index.csv.
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import lever_models  # noqa: E402
import levers  # noqa: E402


RESULTS = BENCHMARKS / "results"
INDEX = RESULTS / "index.csv"
INDEX_COLUMNS = ["record", "what", "split", "machine", "backend", "budget_min", "pairs_with"]


def benchmark_record():
    """The benchmark's dated record (benchmarks/RECORD.md): the tables and sentences the tests check."""
    return (BENCHMARKS / "RECORD.md").read_text()


def index_rows():
    """benchmarks/results/index.csv, one dict per record file or folder, paths made absolute."""
    with INDEX.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == INDEX_COLUMNS
        rows = list(reader)
    for row in rows:
        row["path"] = RESULTS / row["record"]
        row["pairs_with_path"] = RESULTS / row["pairs_with"] if row["pairs_with"] else None
    return rows


def sixty_minute_folders():
    """Folders of levers run with the whole recipe at 60 CPU minutes: (seed, folder, the series' record it pairs with)."""
    return [(int(row["split"]), row["path"], row["pairs_with_path"]) for row in index_rows()
            if row["budget_min"] == "60" and row["pairs_with"] and row["path"].is_dir()]


def sixty_minute_levers():
    """Per split, the 60-minute folder holding bf16 (the lever measured on all three) and the series' record it pairs with."""
    return {seed: (folder, series) for seed, folder, series in sixty_minute_folders() if (folder / "bf16.json").exists()}


def converged():
    """The runs with no time limit on a lent GPU: per split, the 60-minute CPU series run each is paired with."""
    return {int(row["split"]): row["pairs_with_path"] for row in index_rows()
            if row["record"].startswith("converged-h200-jax/")}


def record_files(path):
    """The JSON records of an index row: the file itself, or every .json under the folder."""
    return [path] if path.is_file() else sorted(path.rglob("*.json"))


def test_the_index_lists_every_record_and_only_records_that_exist():
    """Every index path exists; every file under benchmarks/results/ (the index aside) lies in exactly one row."""
    rows = index_rows()
    records = [row["record"] for row in rows]
    assert len(records) == len(set(records)), "a record is listed twice"
    for row in rows:
        assert row["path"].exists(), row["record"]
        assert row["pairs_with_path"] is None or row["pairs_with_path"].is_file(), row["pairs_with"]
        assert row["what"] and row["machine"] in {"2-core CPU", "NVIDIA H200"} and row["backend"] in {"tensorflow", "jax", "tensorflow+jax+torch"}
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path != INDEX:
            owners = [row["record"] for row in rows if path == row["path"] or row["path"] in path.parents]
            assert len(owners) == 1, f"{path.relative_to(RESULTS)} is listed {len(owners)} times in index.csv"


@pytest.mark.parametrize("row", index_rows(), ids=lambda row: row["record"])
def test_the_index_row_is_what_its_records_say(row):
    """Split, backend and budget as each JSON record holds them; a paired record on the same split and slices."""
    records = [json.loads(path.read_text()) for path in record_files(row["path"])]
    assert records, row["record"]
    for record in records:
        assert record.get("seed") == (int(row["split"]) if row["split"] else None), row["record"]
        if "backend" in record:
            assert record["backend"] == row["backend"], row["record"]
        if "budget_min" in record:
            assert record["budget_min"] == float(row["budget_min"]), row["record"]
    if row["pairs_with"]:
        paired = json.loads(row["pairs_with_path"].read_text())
        assert paired["seed"] == int(row["split"]), row["record"]
        for record in records:
            assert record["held_out_coverage"] == paired["held_out_coverage"], row["record"]  # the same slices


def same_lever(recorded, name):
    """A record's field changes are the lever ``name`` of ``levers.LEVERS``, in the names of either day."""
    return lever_models.current_overrides(recorded) == levers.LEVERS[name][0]


def check_screen_record(name, record, speed, seed):
    """A stage-1 screen's record: the lever's changes, the epochs its CPU speed buys, JAX, 640 held-out slices."""
    changes = dict(record["overrides"])
    assert changes.pop("finetune_epochs") == 0 and same_lever(changes, name), name
    assert record["stage_epochs"] == [levers.screen_epochs(name, speed, 28, stage_one_only=True)[0]], name
    assert (record["backend"], record["seed"], record["held_out"]) == ("jax", seed, 640), name
    assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)


def test_the_committed_screen_is_what_the_benchmark_readme_reports():
    """The stage-1 screen's records: each lever trained the epochs its CPU speed buys, scored on 640 slices."""
    speed = json.loads((RESULTS / "lever-speed-cpu.json").read_text())["levers"]
    folder = RESULTS / "screen-stage1-h200-jax"
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert {"series", "series-seed43", "residual", "scse", "hypercolumn", "shift8", "focal-dice"} <= set(records)
    for name, record in records.items():
        check_screen_record(name, record, speed, 2026)
    assert all(len(r["held_out_coverage"]) == 640 for r in records.values())
    rows = levers.table(folder).splitlines()
    record = benchmark_record()
    assert "| empty (250) | under 10% salt (92) | 10% salt or more (298) |" in rows[0]
    for row in rows[2:]:  # every column, scores by salt size included, as the benchmark record prints it
        assert row in record, row


def test_the_committed_two_split_screen_is_what_the_benchmark_readme_reports():
    """The second stage-1 screen: five levers on two splits, epochs from the side-by-side speed probe."""
    speed = json.loads((RESULTS / "lever-speed-cpu-empty-head.json").read_text())["levers"]
    folders = [RESULTS / "screen-stage1-h200-jax-two-splits" / f"seed-{seed}" for seed in (2026, 2027)]
    readme = benchmark_record()
    for folder, seed in zip(folders, (2026, 2027)):
        records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
        assert set(records) == {"series", "series-seed43", "size-weighted", "bf16", "empty-head"}
        for name, record in records.items():
            check_screen_record(name, record, speed, seed)
        for row in levers.table(folder).splitlines()[2:]:
            assert row in readme, row
    for row in levers.pooled_table(folders).splitlines():
        assert row in readme, row


def test_the_committed_stage_averages_are_what_the_benchmark_readme_reports():
    """Both stages' models averaged, on three splits: stage 2 alone is each run's own score."""
    import average_stages

    readme = benchmark_record()
    for seed in (2026, 2027, 2028):
        folder = RESULTS / "two-stage-h200-jax" / f"seed-{seed}"
        series = json.loads((folder / "series.json").read_text())
        record = json.loads((folder / "average_stages.json").read_text())
        assert (series["seed"], series["stage_epochs"], series["backend"], series["overrides"]) == \
            (seed, [28, 28], "jax", {"finetune_epochs": 28})
        assert [row["stage_two_weight"] for row in record["weights"]] == list(average_stages.WEIGHTS)
        assert record["seed"] == seed and record["weights"][0]["held_out_score"] == series["held_out_score"]
        assert record["held_out_coverage"] == series["held_out_coverage"]
        chosen = max(record["weights"], key=lambda row: (row["val_score"], row["stage_two_weight"]))
        assert record["chosen_weight"] == chosen["stage_two_weight"]
        for row in record["weights"]:
            assert np.mean(row["held_out_per_image"]) == pytest.approx(row["held_out_score"], abs=1e-4)
        for line in average_stages.table(record).splitlines()[2:]:
            assert line in readme, line


MUST_HOLD = {"cpu-upscale-2026-60min": {"upscale2-narrow"}}
"""The levers a 60-minute folder must hold, where not bf16 (the lever the pooled tables need)."""


SIXTY_MINUTE_FOLDERS = [(seed, folder, series, MUST_HOLD.get(folder.name, {"bf16"}))
                        for seed, folder, series in sixty_minute_folders()]
"""Every folder of levers run at 60 CPU minutes: its split, the series' record it pairs with, the levers it must hold."""


def test_the_index_names_the_60_minute_levers_and_their_pairs():
    """bf16 at 60 CPU minutes on all three splits, each beside the series' run on its split; the upscaled lever on the first."""
    assert sorted(sixty_minute_levers()) == [2026, 2027, 2028]
    assert {(seed, folder.name) for seed, folder, _, _ in SIXTY_MINUTE_FOLDERS} >= {(2026, "cpu-upscale-2026-60min")}
    assert sorted(converged()) == [2026, 2028]


@pytest.mark.parametrize("seed, folder, series, expect", SIXTY_MINUTE_FOLDERS,
                         ids=[folder.name for _, folder, _, _ in SIXTY_MINUTE_FOLDERS])
def test_the_committed_60_minute_levers_are_what_the_benchmark_readme_reports(seed, folder, series, expect):
    """Levers run with the whole recipe at 60 CPU minutes, paired with the series' run on the same split."""
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert expect <= set(records) and "series" not in records
    for name, record in {**records, "series": json.loads(series.read_text())}.items():
        assert same_lever(record["overrides"], name), name
        assert (record["budget_min"], record["seed"], record["backend"], record["held_out"]) == \
            (60, seed, "tensorflow", 640), name
        assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)
    with pytest.raises(SystemExit, match="no series.json"):
        levers.table(folder)
    readme = benchmark_record()
    for row in levers.table(folder, series=series).splitlines()[2:]:
        assert row in readme, row


@pytest.mark.parametrize("seeds", [(2026, 2028), (2026, 2027, 2028)])
def test_the_pooled_60_minute_levers_are_what_the_benchmark_readme_reports(seeds):
    """bf16 at 60 CPU minutes beside a series run: first on two splits, then on all three, every held-out slice paired."""
    pairs = sixty_minute_levers()
    rows = levers.pooled_table([pairs[s][0] for s in seeds], series=[pairs[s][1] for s in seeds]).splitlines()
    assert any(row.startswith("| bf16 |") for row in rows)
    readme = benchmark_record()
    for row in rows:
        assert row in readme, row


def test_the_unpaired_second_split_bf16_run_is_what_the_benchmark_readme_reports():
    """bf16 on the second split has no series record with per-slice scores to pair with: its own table."""
    import report

    folder = RESULTS / "cpu-levers-2027-60min"
    record = json.loads((folder / "bf16.json").read_text())
    assert same_lever(record["overrides"], "bf16")
    assert (record["budget_min"], record["seed"], record["backend"], record["held_out"]) == (60, 2027, "tensorflow", 640)
    assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)
    table = report.markdown_table([record])
    assert (folder / "bf16.md").read_text() == table
    readme = benchmark_record()
    assert table.splitlines()[2] in readme
    pairs = sixty_minute_levers()
    assert pairs[2027][0] == folder
    means = [json.loads(path.read_text())["held_out_score"]
             for path in (folder / "bf16.json", *(pairs[s][0] / "bf16.json" for s in (2026, 2028)))]
    assert f"**Over the three splits bfloat16 averages {np.mean(means):.3f}**" in readme


def test_the_committed_model_averages_are_what_the_benchmark_readme_reports():
    """Whole runs' models averaged (average_runs.py): each run alone is its committed record's score."""
    import average_runs

    pairs = sixty_minute_levers()
    ensembles = {row["record"]: row["pairs_with_path"] for row in index_rows()}
    assert ensembles["cpu-ensembles-60min/seed-2026.json"] == pairs[2026][1]
    assert ensembles["cpu-ensembles-60min/seed-2028.json"] == pairs[2028][1]
    committed = {"series-2026-60min": pairs[2026][1],
                 "bf16-2026-60min": pairs[2026][0] / "bf16.json",
                 "head-2026-60min": pairs[2026][0] / "empty-head.json",
                 "three-2028-60min": pairs[2028][1],
                 "bf16-2028-60min": pairs[2028][0] / "bf16.json"}
    readme = benchmark_record()
    for seed, runs in ((2026, 3), (2028, 2)):
        record = json.loads((RESULTS / "cpu-ensembles-60min" / f"seed-{seed}.json").read_text())
        assert record["seed"] == seed and len(record["runs"]) == runs
        assert len(record["combinations"]) == 2 ** runs - 1  # each run alone and every combination
        for run in record["runs"]:
            alone = next(row for row in record["combinations"] if row["members"] == [run["name"]])
            original = json.loads(committed[run["name"]].read_text())
            assert alone["held_out_score"] == original["held_out_score"] == run["held_out_score"], run["name"]
            assert alone["held_out_per_image"] == original["held_out_per_image"], run["name"]
            assert (run["overrides"], original["seed"]) == (original["overrides"], seed), run["name"]
        for row in record["combinations"]:
            assert np.mean(row["held_out_per_image"]) == pytest.approx(row["held_out_score"], abs=1e-4)
        for line in average_runs.table(record).splitlines():
            assert line in readme, line


def test_the_second_split_s_series_measured_again_is_what_the_benchmark_readme_reports():
    """Today's recipe on the second split at 60 CPU minutes, with the per-slice scores its first run lacked."""
    import report

    folder = RESULTS / "cpu-three-splits-60min" / "seed-2027"
    record = json.loads((folder / "series.json").read_text())
    assert (record["budget_min"], record["seed"], record["backend"], record["held_out"], record["overrides"]) \
        == (60, 2027, "tensorflow", 640, {})
    assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)
    pairs = sixty_minute_levers()
    assert pairs[2027][1] == folder / "series.json"
    bf16 = json.loads((pairs[2027][0] / "bf16.json").read_text())
    assert bf16["held_out_coverage"] == record["held_out_coverage"]  # the same held-out slices: paired
    table = report.markdown_table([record])
    assert (folder / "results.md").read_text() == table
    readme = benchmark_record()
    assert table.splitlines()[2] in readme
    latest = [json.loads(pairs[seed][1].read_text())["held_out_score"] for seed in (2026, 2027, 2028)]
    assert f"it is **{np.mean(latest):.3f}** ({', '.join(f'{v:.4g}' for v in latest)})" in readme


def test_the_committed_third_split_pair_is_what_the_benchmark_readme_reports():
    """The reference and the series on the third split, 60 CPU minutes each: the paired gain the issue asks for."""
    import report

    folder = RESULTS / "cpu-three-splits-60min" / "seed-2028"
    results = [json.loads((folder / f"{name}.json").read_text()) for name in ("reference", "series")]
    for record in results:
        assert (record["budget_min"], record["seed"], record["backend"], record["held_out"], record["overrides"]) \
            == (60, 2028, "tensorflow", 640, {}), record["recipe"]
        assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)
    assert results[0]["held_out_coverage"] == results[1]["held_out_coverage"]  # the same held-out slices
    table = report.markdown_table(results)
    assert (folder / "results.md").read_text() == table
    readme = benchmark_record()
    for row in table.splitlines()[2:]:
        assert row in readme, row


def test_the_committed_synthetic_class_run_is_what_the_readme_reports():
    folder = RESULTS / "cpu-class-synthetic"
    metrics = json.loads((folder / "metrics.json").read_text())
    stages = [len(pd.read_csv(folder / f"history-stage{k}.csv")) for k in (1, 2)]
    record = benchmark_record()
    assert metrics["setting"] == "class" and "synthetic" in metrics["data"]
    assert f"| epochs (stage 1 + stage 2) | {stages[0]} + {stages[1]} " in record
    scores = f"{metrics['at_threshold_0.5']['competition_score']:.3f} / {metrics['competition_score']:.3f}"
    assert f"**{scores}**" in record
    assert f"it scores {scores} (threshold 0.5 / post-processed)" in (BENCHMARKS.parent / "README.md").read_text()


@pytest.mark.parametrize("seed", sorted(converged()))
def test_the_runs_with_no_time_limit_are_what_the_benchmark_readme_reports(seed):
    """The ceiling probe: early stopping ended every stage before its cap; each run against the 60-minute one."""
    folder = RESULTS / "converged-h200-jax" / f"seed-{seed}"
    against = converged()[seed]
    sixty_minutes = json.loads(against.read_text())
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert set(records) == ({"series", "wide"} if seed == 2026 else {"series"})
    for name, record in records.items():
        changes = dict(record["overrides"])
        assert changes.pop("finetune_epochs") == 100 and same_lever(changes, name), name
        assert (record["seed"], record["backend"], record["held_out"], record["budget_min"]) == (seed, "jax", 640, 600)
        assert all(epochs < 100 for epochs in record["stage_epochs"]), name  # early stopping decided
        assert record["train_minutes"] < 10, name  # the budget of 600 minutes never bound
        assert np.mean(record["held_out_per_image"]) == pytest.approx(record["held_out_score"], abs=1e-4)
        assert record["held_out_coverage"] == sixty_minutes["held_out_coverage"]
    readme = benchmark_record()
    rows = levers.table(folder, against=against).splitlines()
    assert rows[0].endswith(f"| paired gain over the --against run, {sixty_minutes['held_out_score']:.4f} (95% interval) |")
    for row in rows[2:]:
        assert row in readme, row


@pytest.mark.parametrize("record", ["lever-speed-cpu-wide.json", "lever-speed-cpu-upscale.json"])
def test_the_heavier_levers_speed_is_what_the_benchmark_readme_reports(record):
    speed = json.loads((RESULTS / record).read_text())["levers"]
    assert "series" in speed and len(speed) > 1
    readme = benchmark_record()
    for name, row in speed.items():
        ratio = row["images_per_s"] / speed["series"]["images_per_s"]
        assert (f"| {name} | {row['images_per_s']:.1f} | {ratio:.2f} | {row['forward_gflop']:.3f} "
                f"| {row['train_gflop_per_s']:.0f} | {row['params']:,} |") in readme, name


def test_gpu_training_record_is_committed_and_complete():
    """The lent-GPU run the README quotes: its record is in the repository, with what the README cites."""
    record = json.loads((RESULTS / "gpu-h200-jax-full.json").read_text())
    assert record["setting"] == "full" and record["backend"] == "jax"
    assert [stage["stage"] for stage in record["stages"]] == [1, 2]
    assert 0 < record["val_score_at_0.5"] <= record["val_score_postprocessed"] <= 1


def test_the_submission_memory_record_is_what_the_benchmark_readme_reports():
    """write_submission for 1,500 and 18,000 test slices (benchmarks/submission_memory.py), each in its own process."""
    record = json.loads((RESULTS / "submission-memory-cpu.json").read_text())
    runs = {run["slices"]: run for run in record["runs"]}
    assert sorted(runs) == [1500, 18000] and all(run["rows"] == run["slices"] for run in runs.values())
    all_at_once = 18000 * 101 * 101 * 4 / 1e6  # MB of float32 probabilities, had the slices been held together
    assert runs[18000]["peak_growth_mb"] < all_at_once / 4
    readme = (BENCHMARKS / "README.md").read_text()
    assert (f"+{runs[18000]['peak_growth_mb']:.0f} MB of peak memory for 18,000 slices, "
            f"+{runs[1500]['peak_growth_mb']:.0f} MB for 1,500") in readme


def test_the_speed_table_is_what_the_benchmark_readme_reports():
    """The side-by-side speed table of the front page is the one speed_table.py prints from its record."""
    import speed_table

    record = json.loads((RESULTS / "speed-table-cpu.json").read_text())
    assert {(r["backend"], r["precision"]) for r in record["rows"]} >= {
        (b, p) for b in ("tensorflow", "jax", "torch") for p in ("float32", "mixed_bfloat16")}
    assert speed_table.table(record) in (BENCHMARKS / "README.md").read_text()


def test_the_lesson_table_is_what_the_benchmark_pages_report():
    """The lesson setting's splits, each paired with its 60-minute record, as lesson_table.py prints them."""
    import lesson_table

    rows = lesson_table.rows()
    assert rows and all(r["lesson"]["budget_min"] == 20 and r["sixty"]["budget_min"] == 60 for r in rows)
    assert all(sum(r["lesson"]["stage_epochs"]) == r["lesson"]["epochs"] for r in rows)
    table = lesson_table.table()
    assert table in (BENCHMARKS / "README.md").read_text() and table in (BENCHMARKS / "RECORD.md").read_text()


def test_the_lesson_run_on_the_real_data_is_what_the_readme_reports():
    """SALT_SETTING=lesson make run: its epochs, training minutes, notebook times and scores, as the README gives them."""
    folder = RESULTS / "cpu-lesson-real"
    metrics = json.loads((folder / "metrics.json").read_text())
    stages = [pd.read_csv(folder / f"history-stage{k}.csv") for k in (1, 2)]
    seconds = dict(line.split() for line in (folder / "papermill-seconds.txt").read_text().splitlines())
    readme = (BENCHMARKS.parent / "README.md").read_text()
    assert metrics["setting"] == "lesson" and "real" in metrics["data"]
    training_min = (stages[0]["train_seconds"].iloc[-1] + stages[1]["train_seconds"].iloc[-1]) / 60
    assert training_min <= 20
    epochs = f"{len(stages[0])} + {len(stages[1])} epochs"
    assert f"| {float(seconds['03_train']) / 60:.1f} min ({training_min:.1f} of training: {epochs}) |" in readme
    assert f"| {sum(map(float, seconds.values())) / 60:.1f} min |" in readme
    scores = f"{metrics['at_threshold_0.5']['competition_score']:.3f} / {metrics['competition_score']:.3f}"
    assert f"scored {scores} on" in readme.replace("\n", " ")


def notebook_output(name, marker):
    """The printed text of the committed notebook ``name``'s code cell whose source holds ``marker``."""
    cells = json.loads((BENCHMARKS.parent / name).read_text())["cells"]
    cell = next(c for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"]))
    return "".join("".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream")


def test_the_readme_reports_the_committed_notebooks_class_run():
    """The README's class column and scores are those the committed notebooks print (make notebooks refreshes both)."""
    metrics = json.loads(notebook_output("04_evaluate.ipynb", "metrics = {"))
    assert metrics["setting"] == "class" and "real TGS data" in metrics["data"], metrics
    readme = " ".join((BENCHMARKS.parent / "README.md").read_text().split())  # as one line: rewrapping is no change
    scores = f"{metrics['at_threshold_0.5']['competition_score']:.3f} / {metrics['competition_score']:.3f}"
    assert f"(threshold 0.5 / post-processed; the class run: {scores})" in readme
    assert (f"The committed notebooks score {metrics['at_threshold_0.5']['competition_score']:.3f} on their "
            f"validation split ({metrics['competition_score']:.3f} post-processed)") in readme
    trained = notebook_output("03_train.ipynb", "training time")
    epochs = " + ".join(line.split(": ")[1].split(" epoch")[0] for line in trained.splitlines() if line.startswith("stage "))
    minutes = trained.split("training time ")[1].split(" min")[0]
    assert f"({minutes} of training: {epochs} epochs)" in readme


def test_the_live_views_cost_is_what_the_committed_03_prints():
    """The view's cost per epoch, measured in the committed class run, as benchmarks/README.md quotes it."""
    printed = [line for name in ("model.fit(feed", "helpers.train_stage_two(")
               for line in notebook_output("03_train.ipynb", name).splitlines() if line.startswith("The view: ")]
    assert len(printed) == 2, printed  # stage 1 and stage 2
    readme = (BENCHMARKS / "README.md").read_text()
    for line in printed:
        assert f"`{line}`" in readme, line
        assert float(line.split(", ")[1].split("%")[0]) <= 2.0, line  # at most 2% of an epoch
