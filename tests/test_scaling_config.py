"""The scaling options: parsed and checked once into one typed config (ScalingConfig), what a resume merges,
and the plan line printed before a sweep starts."""
import pytest

from rwkv_bench.errors import UserError
from rwkv_bench.scaling import plan
from rwkv_bench.scaling.config import ScalingConfig, resolve
from rwkv_bench.scaling.estimate import CALIBRATED_ON, Size


def test_the_config_holds_the_parsed_options():
    c = ScalingConfig(models="rwkv4-tiny, gptneox-tiny", scenario="generate,prefill", min_len=16, max_len=1024,
                      gen_max_len=64, memory_limit="2G", dtype="fp32")
    assert c.model_names == ["rwkv4-tiny", "gptneox-tiny"] and [s.family for s in c.specs] == ["rwkv", "transformer"]
    assert c.scenarios == ["prefill", "generate"]            # the order they run in a child
    assert c.lengths["prefill"] == [16, 32, 64, 128, 256, 512, 1024] and c.lengths["generate"] == [16, 32, 64]
    assert c.memory_limit_bytes == 2 * 2 ** 30 and c.dtype == "float32"


@pytest.mark.parametrize("options,needle", [
    (dict(max_len=0), "--max-len must be positive"),
    (dict(min_len=64, max_len=8), "--min-len 64 is larger than --max-len 8"),
    (dict(points=3, ratio=2.0), "not both"),
    (dict(ratio=1.0), "--ratio must be greater than 1"),
    (dict(gen_max_len=4, min_len=8), "no generate lengths"),
    (dict(memory_limit="lots"), "--memory-limit"),
])
def test_each_option_is_checked_when_the_config_is_built(options, needle):
    with pytest.raises(UserError, match=needle):
        ScalingConfig(**options)


def test_a_resume_keeps_the_stored_options_and_one_grid_flag_replaces_the_other():
    stored = dict(models="rwkv4-tiny", min_len=10, max_len=1000, ratio=10.0, repeats=1)
    c = resolve({"points": 2}, stored)
    assert (c.points, c.ratio, c.repeats) == (2, None, 1) and c.lengths["prefill"] == [10, 1000]
    with pytest.raises(UserError, match="--seed"):
        resolve({"seed": 5}, {**stored, "seed": 0})


def test_the_plan_line_names_the_calibration_machine_and_this_one_and_says_seconds(monkeypatch):
    monkeypatch.setattr(plan, "cpu_name", lambda: "AMD EPYC 7B13")
    c = ScalingConfig(models="rwkv4-tiny", scenario="prefill", min_len=8, max_len=64, threads=1)
    todo = plan.plan_points(c)
    sizes = {"rwkv4-tiny": Size()}
    text = plan.plan_text(c, todo, {p: 45.0 / len(todo) for p in todo}, sizes)
    assert "rough estimate 45 s" in text and "0 min" not in text
    assert f"calibrated on {CALIBRATED_ON}" in text and "this machine: AMD EPYC 7B13, 1 thread per child" in text
    assert "rough estimate 12 min" in plan.plan_text(c, todo, {todo[0]: 720.0}, sizes)


def test_the_default_sweep_has_both_rwkv_versions_and_is_planned_under_six_minutes():
    from rwkv_bench.scaling.estimate import model_size
    from rwkv_bench.scaling.predict import transformer_dims

    c = ScalingConfig()
    assert c.model_names == ["rwkv4-tiny", "rwkv7-tiny", "gptneox-tiny", "transformers:rwkv4-tiny"]
    todo = plan.plan_points(c)
    dims = {s.text: transformer_dims(s) for s in c.specs}
    sizes = {s.text: model_size(s, dims[s.text]) for s in c.specs}
    assert sum(plan.point_cost_s(p, c, sizes, dims) for p in todo) < 6 * 60  # `make run`, as typed
