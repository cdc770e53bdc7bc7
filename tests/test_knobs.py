"""A knob and a method defined here, inside the test, flow through profile → search → record → plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adacal import KNOBS, RECIPES, Knob, Recipe, convert, register_knob, register_recipe
from adacal.config import CalibrationConfig, PipelineConfig
from adacal.recipes import Correction, Search, Thresholds, Uniform
from adacal.report import plots

pytestmark = pytest.mark.usefixtures("single_thread")


class InitialPotential(Knob):
    """v_init (initial potential as a fraction of the threshold): a knob the library does not search."""

    name, symbol, label, objective, integer = "test_vinit", "u₀", "initial potential / θ", "score", False

    def get(self, neuron: Any) -> float:
        return float(neuron.v_init)

    def set(self, neuron: Any, value: Any) -> None:
        neuron.v_init.fill_(float(value))

    def candidates(self, config: Any) -> tuple[float, ...]:
        return (0.0, 0.25, 0.5)

    def reference(self, config: Any) -> float:
        return 0.5

    def budget(self, table: Any, config: Any) -> float:
        return float("inf")  # no cost limit: the least sensitive value per layer


@pytest.fixture
def registered() -> Any:
    knob = register_knob(InitialPotential())
    recipe = register_recipe(Recipe("test_vinit_search", (Uniform("phi", 2), Thresholds(), Search(knob.name),
                                                          Correction())))
    yield knob, recipe
    KNOBS.pop(knob.name)
    RECIPES.pop(recipe.name)


def test_a_new_knob_flows_through_profile_search_record_and_plot(registered: Any, small_cnn: Any, images: Any,
                                                                   tmp_path: Path) -> None:
    knob, recipe = registered
    cfg = PipelineConfig(method=recipe.name, timesteps=4, profile_batch=16,
                         calibration=CalibrationConfig(num_batches=2))
    snn, rec = convert(small_cnn, [images(16, seed=s) for s in range(2)], config=cfg)
    names = list(snn.neurons())
    scores = rec["sensitivity"][knob.name]
    assert set(scores) == set(names) and all(len(row) == 3 for row in scores.values())
    # the search picked, per layer, the candidate with the least profiled sensitivity (no budget)
    for layer, chosen in rec["knobs"][knob.name].items():
        best = min(scores[layer], key=lambda v: scores[layer][v])
        assert chosen == pytest.approx(float(best))
        assert float(snn.neurons()[layer].v_init) == pytest.approx(chosen)
    assert rec["frontiers"][knob.name]["chosen"][1] == pytest.approx(sum(min(r.values()) for r in scores.values()))
    axes = plots.plot_layer_settings(rec["knobs"], path=tmp_path / "settings.png")
    assert len(axes) == len([k for k, v in rec["knobs"].items() if v])
    assert any(ax.get_ylabel().startswith("u₀") for ax in axes)
    front = plots.plot_pareto(rec["frontiers"][knob.name], knob=knob.name, path=tmp_path / "front.png")
    assert "u₀ search" in front.get_title()
    assert (tmp_path / "settings.png").is_file() and (tmp_path / "front.png").is_file()


def test_knob_and_method_names_are_not_spread_over_the_code() -> None:
    """No module but the ones defining them names a method or a knob (the registries do the rest).

    The neuron's own state (its ``phi``/``rho`` buffers, ``neurons/``) and the NIR file format that
    stores those buffers by name (``export/``) are the neuron's attributes, not knob dispatch.
    """
    root = Path(__file__).resolve().parent.parent / "src" / "adacal"
    defining = {root / "recipes.py", root / "knobs.py"}
    offenders = []
    for path in root.rglob("*.py"):
        if path in defining or path.parent.name in ("neurons", "export"):
            continue
        text = path.read_text(encoding="utf-8")
        for word in ('"phi"', "'phi'", '"rho"', "'rho'", "adafire+ssc", '"burstfire"', '"calibration"'):
            if word in text:
                offenders.append(f"{path.relative_to(root)}: {word}")
    assert not offenders, offenders
