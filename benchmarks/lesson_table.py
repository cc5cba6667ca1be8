"""The lesson setting (20 training minutes) on the benchmark's splits, each paired with the 60-minute series.

Each split's lesson run is ``compare_recipes.py --budget-min 20 --recipes series`` (the class recipe,
with the precision ``auto`` picks on this CPU), recorded as
``results/cpu-lesson-20min/seed-<split>/series.json``; it is paired, slice by slice, with the
series' own 60-minute record on the same split (the held-out slices are the same). The table gives
for each split the epochs, the training images/s, the held-out score with its 95% interval, the
60-minute score and the paired difference with its interval, then the mean of the splits
recorded::

    .venv/bin/python benchmarks/lesson_table.py            # from the committed records
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import paired_gain_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LESSON = RESULTS / "cpu-lesson-20min"
SIXTY = {2026: "cpu-series-2026-60min/series.json", 2027: "cpu-three-splits-60min/seed-2027/series.json",
         2028: "cpu-three-splits-60min/seed-2028/series.json"}
"""Each split's 60-minute record of the series (the float32 recipe of its day)."""

TARGET = 0.780
"""The 60-minute series' mean over the three splits: what the lesson setting aims at."""


def rows(folder=LESSON):
    """One dict per recorded split: the lesson run and its 60-minute pair."""
    found = []
    for path in sorted(Path(folder).glob("seed-*/series.json")):
        lesson = json.loads(path.read_text())
        sixty = json.loads((RESULTS / SIXTY[lesson["seed"]]).read_text())
        if lesson["held_out_coverage"] != sixty["held_out_coverage"]:
            raise ValueError(f"{path}: its held-out slices are not those of {SIXTY[lesson['seed']]}")
        found.append({"seed": lesson["seed"], "lesson": lesson, "sixty": sixty,
                      "gain": paired_gain_text(lesson["held_out_score"] - sixty["held_out_score"],
                                               lesson["held_out_per_image"], sixty["held_out_per_image"])})
    return found


def table(folder=LESSON) -> str:
    lines = ["| split | epochs (stage 1 + 2) | training images/s | precision | held-out score (95% interval) "
             "| 60-minute series | difference, paired (95% interval) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    found = rows(folder)
    for row in found:
        lesson, sixty = row["lesson"], row["sixty"]
        low, high = lesson["held_out_ci95"]
        precision = lesson["overrides"].get("precision", lesson.get("precision", "float32"))
        lines.append(f"| `--seed {row['seed']}` | {' + '.join(map(str, lesson['stage_epochs']))} | "
                     f"{lesson['train_images_per_s']:.1f} | {precision} | {lesson['held_out_score']:.4f} "
                     f"({low:.3f}–{high:.3f}) | {sixty['held_out_score']:.4f} | {row['gain']} |")
    if found:
        mean = np.mean([r["lesson"]["held_out_score"] for r in found])
        sixty_mean = np.mean([r["sixty"]["held_out_score"] for r in found])
        lines.append(f"| mean of {len(found)} | | | | **{mean:.4f}** | {sixty_mean:.4f} | {mean - sixty_mean:+.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else LESSON))
