"""What a sweep is about to run: its points in order, grouped by child process, and their rough cost.

Order: lengths ascending, then model, so a run stopped early still compares the models at the lengths it
reached; the scenarios of one (T, model) run in one child, in points.SCENARIOS' order (the prefill
builds the state decode starts from).
"""
from __future__ import annotations

from .config import ScalingConfig
from ..recording import cpu_name
from .estimate import CALIBRATED_ON, LOAD_S, estimated_cost_s, serve_cost_s
from .points import SERVE
from .predict import memory_refusal, predict

Point = tuple[str, int, str]  # (scenario, T, model)


def plan_points(c: ScalingConfig) -> list[Point]:
    """Every point of the sweep in the order it runs."""
    scenarios = [s for s in c.scenarios if s != SERVE]  # serve points are (model, T, B): serving.py plans them
    grid = sorted({T for s in scenarios for T in c.lengths[s]})
    return [(s, T, model) for T in grid for model in c.model_names for s in scenarios if T in c.lengths[s]]


def children(todo: list[Point]) -> list[tuple[list[str], int, str]]:
    """The points to run grouped by child: (phases, T, model), the scenarios of one (T, model) together."""
    out = []
    for scenario, T, model in todo:
        if out and out[-1][1:] == (T, model):
            out[-1][0].append(scenario)
        else:
            out.append(([scenario], T, model))
    return out


def point_cost_s(point: Point, c: ScalingConfig, sizes: dict, dims: dict) -> float:
    """The estimate of one point: nothing for a point predicted not to fit, at most its time budget."""
    scenario, T, model = point
    predicted = predict(dims.get(model), T, [scenario], c.kv_cache, c.dtype, c.prompt_len)
    if memory_refusal(predicted.get("predicted_mem_bytes"), c.memory_limit_bytes):
        return 0.0
    return min(estimated_cost_s(scenario, T, sizes[model]), float(c.time_budget) + LOAD_S)


def serve_cost_total_s(c: ScalingConfig, sizes: dict) -> float:
    """The serve points' estimate: every (T, model, B) that is not predicted past the memory budget."""
    from .serving import analytic_state_bytes, predicted_bytes, serve_points
    from .serving_measure import distinct_prompts

    total = 0.0
    for T, spec, B in serve_points(c):
        if memory_refusal(predicted_bytes(spec, T, B, c, analytic_state_bytes(spec, T, c.dtype)),
                          c.memory_limit_bytes):
            continue
        total += serve_cost_s(T, B, sizes[spec.text], distinct_prompts(B, T, c.prefill_token_budget),
                              c.decode_steps, float(c.time_budget))
    return total


def plan_text(c: ScalingConfig, todo: list[Point], costs: dict, sizes: dict) -> str:
    """What the sweep is about to do, and roughly how long it takes, before it starts."""
    models = c.model_names
    lines = [f"plan: {len(models)} model(s): {', '.join(models)}"]
    for scenario in c.scenarios:
        grid = c.lengths[scenario]
        if scenario == SERVE:
            lines.append(f"  serve: T = {', '.join(f'{t:,}' for t in grid)}; B = {c.batch_grid(False)} "
                         f"(recurrent models to {c.batch_grid(True)[-1]:,}), then the capacity at each T; rough "
                         f"estimate {duration(serve_cost_total_s(c, sizes))} (calibrated on {CALIBRATED_ON}; the "
                         "capacity runs, which depend on the grid's measurements, not counted)")
            continue
        how = {"generate": " (every token decoded and timed one by one: the direct Figure 7)",
               "decode": " (prefill to T in the prefill's child, then timed steps at context T; Figure 7 is "
                         "integrated from these)"}.get(scenario, "")
        lines.append(f"  {scenario}: {len(grid)} lengths, T = {grid[0]:,} ... {grid[-1]:,}{how}")
    estimate = sum(costs.values())
    unknown = [m for m in models if not sizes[m].known]
    threads = f"{c.threads} thread{'s' if c.threads != 1 else ''}" if c.threads else "torch's default threads"
    if not todo and c.scenarios == [SERVE]:
        return "\n".join(lines)  # serve's points are counted when they start (serving.py)
    lines.append(f"  {len(todo)} points in {len(children(todo))} child processes; rough estimate "
                 f"{duration(estimate)} (calibrated on {CALIBRATED_ON}; this machine: {cpu_name()}, {threads} "
                 "per child)"
                 + (f" ({', '.join(unknown)}: size unknown, counted as tiny)" if unknown else "")
                 + " (a point past --time-budget is cut off, and longer lengths of its model are skipped; a "
                 "transformer point predicted not to fit in memory is skipped)")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """"45 s", "12 min", "2.5 h": seconds under a minute, so a short sweep is not "0 min"."""
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 3570:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
