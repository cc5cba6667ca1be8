"""The settings (quick, lesson, class, full) and their overrides: every value is checked, and a wrong one is
named with what it may be; the full setting on a machine without a GPU gets the class budget."""

import re
from dataclasses import replace

import pytest

import helpers


def changed(**changes):
    """The class setting's TrainingConfig with ``changes`` (as a benchmark or a test changes one)."""
    return replace(helpers.training_config("class"), **changes)


OUT_OF_RANGE = [
    # a setting and its overrides (SALT_SETTING, SALT_EPOCHS, SALT_STEPS_PER_EPOCH, SALT_TIME_BUDGET_MIN,
    # SALT_PRECISION)
    (lambda: helpers.training_config("quick", epochs=0), "epochs=0"),
    (lambda: helpers.training_config("quick", epochs=-3), "epochs=-3"),
    (lambda: helpers.training_config("quick", steps_per_epoch=0), "steps_per_epoch=0"),
    (lambda: helpers.training_config("quick", time_budget_min="-5"), "time_budget_min=-5"),
    (lambda: helpers.training_config("quick", time_budget_min="an hour"),
     "SALT_TIME_BUDGET_MIN='an hour' must be a number of minutes or 'none'"),
    (lambda: helpers.training_config("fast"), "SALT_SETTING='fast' is not a setting"),
    (lambda: helpers.env_int("SALT_EPOCHS"), "SALT_EPOCHS='ten' must be a whole number"),
    (lambda: helpers.choose_precision("half"), "SALT_PRECISION='half' is not a precision"),
    # TrainingConfig's own fields
    (lambda: changed(batch_size=0), "batch_size=0"),
    (lambda: changed(finetune_share=1.0), "finetune_share=1.0"),
    (lambda: changed(finetune_epochs=-1), "finetune_epochs=-1"),
    (lambda: changed(learning_rate=-1e-3), "learning_rate=-0.001"),
    (lambda: changed(finetune_learning_rate=0.0), "finetune_learning_rate=0.0"),
    (lambda: changed(precision="float16"), "precision='float16'"),
]


@pytest.mark.parametrize("make, named", OUT_OF_RANGE, ids=[re.split(" must| is not", named)[0] for _, named in OUT_OF_RANGE])
def test_a_value_out_of_range_is_refused_by_name(monkeypatch, make, named):
    monkeypatch.setenv("SALT_EPOCHS", "ten")  # read by env_int only
    with pytest.raises(ValueError, match=rf"\b{re.escape(named)}"):
        make()


def test_full_setting_without_a_gpu_gets_the_class_budget(capsys):
    capped = helpers.training_config("full", gpu=None)
    assert capped.time_budget_min == helpers.SETTINGS["class"]["time_budget_min"]
    printed = capsys.readouterr().out
    assert "No GPU" in printed and "TIME_BUDGET_MIN = 'none'" in printed and "SALT_TIME_BUDGET_MIN=none" in printed
    assert helpers.training_config("full", gpu="NVIDIA H200").time_budget_min is None
    assert helpers.training_config("full", gpu=None, time_budget_min="none").time_budget_min is None
    assert helpers.training_config("full", gpu=None, time_budget_min="30").time_budget_min == 30
    assert helpers.training_config("class", gpu=None).time_budget_min == 55
    assert capsys.readouterr().out == ""  # said only when the cap is applied


def test_the_lesson_setting_is_the_class_recipe_in_20_minutes():
    lesson, course = helpers.training_config("lesson"), helpers.training_config("class")
    assert lesson.time_budget_min == 20 and helpers.stage_one_config(lesson).time_budget_min == 10
    assert replace(lesson, setting="class", time_budget_min=55, notes=course.notes) == course


@pytest.mark.parametrize("flags, backend, expect", [
    ("fpu sse2 avx2 avx512f avx512_bf16", "tensorflow", "mixed_bfloat16"),  # recent AMD Zen, Intel Xeon
    ("fpu sse2 avx2 amx_bf16 amx_tile", "tensorflow", "mixed_bfloat16"),
    ("fpu sse2 avx2 avx512f", "tensorflow", "float32"),  # AVX-512 without bfloat16: slower in bfloat16
    ("fpu sse2 avx2 avx512f avx512_bf16", "jax", "float32"),  # 1.06x on JAX here: not worth it
    (None, "tensorflow", "float32"),  # no /proc/cpuinfo (macOS, Windows): no way to tell
], ids=["avx512-bf16", "amx", "avx512-only", "jax", "not-linux"])
def test_auto_picks_bfloat16_only_on_a_cpu_that_computes_it_fast(tmp_path, monkeypatch, flags, backend, expect):
    cpuinfo = tmp_path / "cpuinfo"
    if flags:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n")
    monkeypatch.setattr(helpers.keras.config, "backend", lambda: backend)
    real = helpers.cpu_computes_bfloat16_fast
    monkeypatch.setattr(helpers, "cpu_computes_bfloat16_fast", lambda: real(cpuinfo))
    assert helpers.choose_precision("auto", gpu=None) == expect
    assert helpers.choose_precision("auto", gpu="Tesla T4") == "mixed_float16"
    assert helpers.choose_precision("float32", gpu=None) == "float32"
