"""The training bench's own logic (bench/training): the tuned Trainer's flags, how targets are judged and
written, the seed summary and the profile's operator kinds. Pure functions, no training: fast."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.training import engine_variants, epoch_profile, flops, hf_worker, run


def _worker(samples_per_s: float, val: float, test: float) -> dict:
    return {
        "samples_per_s": samples_per_s,
        "step_samples_per_s_median": samples_per_s,
        "wall_s": 100.0 / samples_per_s,
        "cpu_s": 200.0 / samples_per_s,
        "val_accuracy": val,
        "test_accuracy": test,
        "_pred": {"validation": [0, 1], "test": [0, 1]},
    }


def _split() -> run.Split:
    rows = [("a", "negative"), ("b", "positive")]
    return run.Split(["negative", "positive"], rows, rows, rows)


def test_native_bf16_reads_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert not hf_worker.native_bf16(info)
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert hf_worker.native_bf16(info)


@pytest.mark.parametrize("grouping_field", ["group_by_length", "train_sampling_strategy"])
def test_tuned_arguments_have_all_four_flags_and_our_schedule(grouping_field: str) -> None:
    # TrainingArguments' fields that matter, of either transformers generation
    fields = [("per_device_train_batch_size", int, 8), (grouping_field, object, None)]
    Args = dataclasses.make_dataclass("Args", fields)

    tuned = hf_worker.tuned_arguments(Args, 16, True, warmup_steps=19, weight_decay=0.01)
    assert tuned["optim"] == "adamw_torch_fused" and tuned["bf16"] is True
    assert tuned["per_device_train_batch_size"] == 16
    assert tuned["warmup_steps"] == 19 and tuned["weight_decay"] == 0.01
    expected = True if grouping_field == "group_by_length" else "group_by_length"
    assert tuned[grouping_field] == expected
    assert hf_worker.tuned_arguments(Args, 16, False)["bf16"] is False


def test_comparison_uses_per_round_ratios_and_medians() -> None:
    runs = {
        "configs": {"hf_trainer": _worker(10.0, 0.80, 0.80)},
        "rounds": {
            "aiaas": [_worker(60.0, 0.79, 0.78), _worker(30.0, 0.81, 0.80), _worker(50.0, 0.80, 0.79)],
            "hf_trainer_tuned": [
                _worker(20.0, 0.80, 0.80),
                _worker(20.0, 0.80, 0.81),
                _worker(20.0, 0.79, 0.80),
            ],
        },
    }
    tuned = run._comparison(_split(), runs, "hf_trainer_tuned")
    assert tuned["speedup_rounds"] == [3.0, 1.5, 2.5] and tuned["speedup"] == 2.5
    assert tuned["accuracy_delta"] == pytest.approx(0.0)
    assert tuned["accuracy_delta_test"] == pytest.approx(-1.0)
    defaults = run._comparison(_split(), runs, "hf_trainer")  # one baseline run: every aiaas round against it
    assert defaults["speedup_rounds"] == [6.0, 3.0, 5.0] and defaults["speedup"] == 5.0


def test_targets_are_value_target_met_and_judged_on_the_tuned_trainer_too() -> None:
    defaults = {"speedup": 5.0, "accuracy_delta": -0.2}
    tuned = {"speedup": 1.9, "accuracy_delta": 0.1, "accuracy_delta_test": -0.6}
    targets = run._targets(defaults, tuned)
    assert set(targets["speedup_vs_tuned"]) == {"value", "target", "met"}
    assert targets["speedup_vs_tuned"] == {"value": 1.9, "target": 2.0, "met": False}
    assert targets["accuracy_delta_vs_tuned_pt"]["met"] is True
    assert targets["accuracy_delta_test_vs_tuned_pt"] == {"value": -0.6, "target": -0.5, "met": False}
    assert targets["speedup_vs_defaults"]["met"] and targets["accuracy_delta_vs_defaults_pt"]["met"]


def test_a_baseline_not_run_is_recorded_as_not_met() -> None:
    tuned = {"speedup": 2.5, "accuracy_delta": 0.1, "accuracy_delta_test": 0.0}
    targets = run._targets({}, tuned)
    assert targets["speedup_vs_defaults"] == {"value": None, "target": 4.0, "met": False}
    assert targets["speedup_vs_tuned"]["met"]


def test_seed_summary_is_mean_and_sample_std_in_points() -> None:
    runs = [
        {"seed": s, "val_accuracy": v, "test_accuracy": 0.8, "samples_per_s": 10.0}
        for s, v in ((0, 0.78), (1, 0.80), (2, 0.82))
    ]
    out = engine_variants.summarize(runs)
    assert out["seeds"] == [0, 1, 2]
    assert out["val_accuracy"] == {"mean": 80.0, "std": 2.0}
    assert out["test_accuracy"]["std"] == 0.0


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("aten::addmm", "matmul"),
        ("aten::mm", "matmul"),
        ("aten::bmm", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_softmax_backward_data", "attention"),
        ("aten::native_layer_norm_backward", "layernorm"),
        ("aten::_to_copy", "dtype casts"),
        ("aten::gelu", None),
    ],
)
def test_profile_puts_operators_in_their_kind(op: str, kind: str | None) -> None:
    assert flops._category(op) == kind


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("aten::addmm", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_softmax_backward_data", "softmax"),
        ("aten::native_layer_norm_backward", "layernorm"),
        ("aten::embedding_dense_backward", "embedding"),
        ("aten::gelu_backward", "gelu"),
        ("aten::native_dropout", "dropout"),
        ("aten::_fused_adamw_", "optimizer"),
        ("aten::_foreach_norm", "gradient clipping"),
        ("aten::_foreach_mul_", "gradient clipping"),
        ("aten::_to_copy", "dtype casts"),
        ("aten::add_", "other operators"),
    ],
)
def test_epoch_profile_puts_operators_in_their_kind(op: str, kind: str) -> None:
    assert epoch_profile._kind(op) == kind


def test_epoch_profile_phases_count_nested_calls_once_in_the_outer_phase() -> None:
    class Work:
        def outer(self) -> int:
            return self.inner() + 1

        def inner(self) -> int:
            return 1

    phases = epoch_profile.Phases()
    phases.wrap(Work, "outer", "outer")
    phases.wrap(Work, "inner", "inner")
    work = Work()
    assert work.outer() == 2 and work.inner() == 1
    assert phases.calls == {"outer": 1, "inner": 1}
    assert set(phases.seconds) == {"outer", "inner"} and all(s >= 0 for s in phases.seconds.values())
