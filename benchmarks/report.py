"""The benchmark's reporting: the measured recipes of a folder merged into a table, with their intervals.

compare_recipes.py measures (trains, scores, times) and writes one ``<recipe>.json`` per recipe;
the intervals it records are ``helpers.bootstrap_interval``'s (04_evaluate teaches it), and this
module turns those records into results.json and results.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bootstrap_interval  # noqa: E402  (04_evaluate teaches it; the benchmark records its intervals)


def paired_gain_text(gain, values, paired_with):
    """``"+0.0031 (-0.007 to +0.013)"``: a gain with the paired 95% interval of ``values`` over ``paired_with``."""
    low, high = bootstrap_interval(values, paired_with=paired_with)
    return f"{gain:+.4f} ({low:+.3f} to {high:+.3f})"


def postprocessing_text(post):
    """``"thr 0.45, min_peak 0.70, TTA, min_px 0"``: a recorded :class:`helpers.Postprocessing`, in one cell."""
    return (f"thr {post['threshold']:.2f}, min_peak {post['min_peak']:.2f}, "
            f"{'TTA' if post['flip_tta'] else 'no TTA'}, min_px {post['min_pixels']}")


def write_results(out, recipes):
    """Merge the ``recipes`` measured in ``out`` into results.json and results.md; return the table."""
    results = [json.loads((out / f"{name}.json").read_text()) for name in recipes if (out / f"{name}.json").exists()]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(table)
    return table


def minutes_to_reach(result, target):
    """Training minutes until the per-epoch held-out score (threshold 0.5) first reached ``target``."""
    for row in result["per_epoch"]:
        if row["held_out_score"] >= target:
            return row["train_minutes"]
    return None


def gain_over_reference(result, reference):
    """The held-out gain of ``result`` over ``reference`` (any other record on the same held-out slices) with
    its paired 95% interval, as text; None for the reference itself, or a record without per-slice scores."""
    if reference is None or result is reference or not all(
            "held_out_per_image" in r for r in (result, reference)):
        return None
    gain = result["held_out_score"] - reference["held_out_score"]
    return paired_gain_text(gain, result["held_out_per_image"], reference["held_out_per_image"])


def markdown_table(results):
    reference = next((r for r in results if r["recipe"] == "reference"), None)
    target = reference["held_out_score"] if reference else None
    lines = ["| recipe | budget (min) | images/s | training GFLOP/s (est.) | epochs | best val_loss | val score | held-out score (95% interval) "
             "| gain over the reference (paired 95% interval) | eval-dir score | min to reference's score "
             "| inference images/s | peak memory (MB) |",
             "|" + "---|" * 13]
    for r in results:
        reach = minutes_to_reach(r, target) if target is not None else None
        name = r["recipe"] + "".join(f", {key}={value}" for key, value in r.get("overrides", {}).items())
        held_out = f"{r['held_out_score']:.4f}"
        if "held_out_ci95" in r:
            held_out += " ({:.3f}–{:.3f})".format(*r["held_out_ci95"])
        gain = gain_over_reference(r, reference)
        gain = "-" if gain is None else gain
        lines.append(
            f"| {name} | {r['budget_min']:g} | {r['train_images_per_s']:.1f} "
            f"| {'-' if 'train_gflop_per_s' not in r else format(r['train_gflop_per_s'], '.0f')} "
            f"| {' + '.join(map(str, r.get('stage_epochs', [r['epochs']])))} "
            f"| {r['best_val_loss']:.4f} | {r['val_score']:.4f} | {held_out} | {gain} "
            f"| {'-' if 'eval_dir_score' not in r else format(r['eval_dir_score'], '.4f')} "
            f"| {'-' if reach is None else f'{reach:.1f}'} "
            f"| {r['inference_images_per_s']:.1f} | {r['peak_memory_mb']:.0f} |")
    return "\n".join(lines) + "\n"
