"""The searches' held-out check: measured energy, uniform candidates, the pick never worse than uniform."""
from __future__ import annotations

import json

import pytest
import torch

from adacal.config import DataSpec, PipelineConfig
from adacal.data import take_split
from adacal.errors import ConfigError, DataError
from adacal.holdout import HoldoutCheck
from adacal.knobs import PHI, RHO, Checked
from adacal.pipeline import convert

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def batches(images):
    return [images(32, seed=s) for s in range(3)]  # 1 calibration batch, then 64 held-out images


def test_take_split_never_overlaps_even_for_a_shuffling_loader(images) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(40.0)), batch_size=8, shuffle=True)
    first, rest = take_split(data, 2, 12, input_fn=lambda b: b[0])
    a = torch.cat(first).tolist()
    b = torch.cat(rest).tolist()
    assert len(a) == 16 and len(b) == 12 and not set(a) & set(b)
    assert take_split(images(4), 1, 10)[1] == []  # one tensor: all of it calibrates
    assert torch.equal(torch.cat(take_split(images(10), 0, 6)[1]), images(10)[:6])


def test_holdout_check_measures_energy_and_distance(small_cnn, images) -> None:
    snn, _ = convert(small_cnn, [images(32)], config=PipelineConfig(method="burstfire", timesteps=4, phi_target=2))
    held = [images(16, seed=7), images(8, seed=8)]
    check = HoldoutCheck(snn, held, timesteps=4)
    m = check.measure(snn)
    assert m.images == 24 and m.energy_pj > 0 and 0 <= m.agreement <= 1 and m.divergence >= 0
    from adacal.energy import measure as energy_measure

    _, rep = energy_measure(snn, torch.cat(held), 4)  # the same spikes counted in one batch
    assert m.energy_pj == pytest.approx(rep.snn_energy_pj, rel=1e-5)
    for n in snn.neurons().values():  # fewer spikes allowed per step: less energy, further from the ANN
        n.set_phi(1)
    m1 = check.measure(snn)
    assert m1.energy_pj < m.energy_pj and m1.divergence > m.divergence
    assert m1.score("kl") == m1.divergence and m1.score("agreement") == 1 - m1.agreement
    with pytest.raises(DataError, match="at least one batch"):
        HoldoutCheck(snn, [], timesteps=4)


@pytest.mark.parametrize("method", ["adafire", "adafire+ssc"])
def test_checked_search_never_loses_to_uniform_on_the_held_out_images(method, small_cnn, batches) -> None:
    cfg = PipelineConfig(method=method, timesteps=4, phi_target=2, profile_batch=32, check_images=64,
                         sensitivity_ratio=2.0, check_tolerance=0.05, rho_candidates=(1.0, 1.5, 2.0, 3.0))
    snn, rec = convert(small_cnn, batches, config=cfg)
    json.dumps(rec, allow_nan=False)
    phi = rec["checks"]["phi"]
    assert phi["images"] == 64 and phi["reference"] == "uniform φ=2" and phi["metric"] == "agreement"
    cands = {c["label"]: c for c in phi["candidates"]}
    ref = cands["uniform φ=2"]
    assert phi["bound"] == pytest.approx(ref["energy_pj"])  # the budget: uniform φ_target's measured energy
    assert any(label.startswith("pareto") for c in phi["candidates"] for label in [c["label"], *c["also"]])
    picked = cands[phi["picked"]]
    feasible = [c for c in phi["candidates"] if c["feasible"]]
    assert picked["feasible"] and picked["score"] == min(c["score"] for c in feasible)
    assert picked["score"] == pytest.approx(1 - picked["agreement"])  # the default metric: top-1 disagreement
    tied = [c for c in feasible if c["score"] == picked["score"]]
    assert picked["divergence"] == min(c["divergence"] for c in tied)  # equal agreement: the lower KL
    assert all(c["energy_pj"] <= phi["bound"] * (1 + 1e-9) for c in feasible)
    # the network returned is the picked one, as it runs: its φ, and the same measurement again
    assert [rec["knobs"]["phi"][k] for k in snn.neurons()] == picked["values"]
    check = HoldoutCheck(snn, batches[1:], timesteps=4)
    if method == "adafire":
        assert check.measure(snn).divergence == pytest.approx(picked["divergence"], rel=1e-6)
    else:
        rho = rec["checks"]["rho"]
        kept = {c["label"]: c for c in rho["candidates"]}[rho["picked"]]
        base = {c["label"]: c for c in rho["candidates"]}["uniform ρ=1"]
        assert kept["score"] <= base["score"] * 1.05 * (1 + 1e-9)
        assert kept["energy_pj"] == min(c["energy_pj"] for c in rho["candidates"] if c["feasible"])
        assert [rec["knobs"]["rho"][k] for k in snn.neurons()] == kept["values"]
        assert check.measure(snn).divergence == pytest.approx(kept["divergence"], rel=1e-6)
    assert "check_phi" in rec["stage_times"]


def test_unchecked_search_is_the_papers(small_cnn, batches) -> None:
    """check="none" applies the Pareto pick as the paper does, and the check with a single candidate
    (nothing else fits) returns the same network."""
    kw = dict(method="adafire", timesteps=4, phi_target=2, profile_batch=32)
    _, off = convert(small_cnn, batches, config=PipelineConfig(check="none", **kw))
    assert "checks" not in off
    _, on = convert(small_cnn, batches, config=PipelineConfig(**kw))
    first = on["checks"]["phi"]["candidates"]
    pareto = [c for c in first if any(x.startswith("pareto") for x in [c["label"], *c["also"]])][0]
    assert pareto["values"] == [off["knobs"]["phi"][k] for k in off["knobs"]["phi"]]


def test_no_held_out_images_skips_the_check_and_says_so(small_cnn, images, caplog) -> None:
    cfg = PipelineConfig(method="adafire", timesteps=4, phi_target=2, profile_batch=16)
    with caplog.at_level("WARNING"):
        _, rec = convert(small_cnn, [images(16)], config=cfg)
    assert rec["checks"] == {"skipped": "no held-out images"}
    assert "held-out check skipped" in caplog.text
    with pytest.raises(DataError, match="holdout_data is empty"):
        convert(small_cnn, [images(16)], config=cfg, holdout_data=[])


def test_choose_rules() -> None:
    cfg = PipelineConfig(check_tolerance=0.1)
    ref = Checked("uniform φ=4", {"a": 4}, energy=100.0, score=0.5)
    cands = [ref, Checked("uniform φ=3", {"a": 3}, 80.0, 0.7), Checked("pareto @ 1", {"a": 5}, 99.0, 0.4),
             Checked("pareto @ 2", {"a": 6}, 120.0, 0.1)]
    best, why = PHI.choose(cands, ref, cfg)
    assert best.label == "pareto @ 1" and "best uniform: uniform φ=4" in why  # 120 > 100: over the budget
    rho_ref = Checked("uniform ρ=1", {"a": 1.0}, 100.0, 0.5)
    rho = [rho_ref, Checked("pareto @ 0", {"a": 1.5}, 70.0, 0.54), Checked("pareto @ 1", {"a": 2.0}, 50.0, 0.6)]
    best, _ = RHO.choose(rho, rho_ref, cfg)
    assert best.label == "pareto @ 0"  # 0.54 <= 0.55; 0.6 is not
    # equal top-1 disagreement (frequent on a few hundred images): the lower held-out divergence wins,
    # then the lower energy
    tie = [Checked("uniform φ=4", {"a": 4}, 100.0, 0.04, details={"divergence": 0.07}),
           Checked("pareto @ 1", {"a": 5}, 98.0, 0.04, details={"divergence": 0.06}),
           Checked("pareto @ 2", {"a": 6}, 97.0, 0.04, details={"divergence": 0.06})]
    assert PHI.choose(tie, tie[0], cfg)[0].label == "pareto @ 2"
    assert PHI.choose(tie[:2], tie[0], cfg)[0].label == "pareto @ 1"
    from adacal.errors import BudgetError

    with pytest.raises(BudgetError, match="raise energy_ratio"):
        PHI.choose([Checked("x", {}, 120.0, 0.1)], ref, cfg)


def test_check_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="check"):
        PipelineConfig(check="sometimes")
    with pytest.raises(ConfigError, match="check_metric"):
        PipelineConfig(check_metric="accuracy")
    with pytest.raises(ConfigError, match="check_images"):
        PipelineConfig(check_images=0)
    with pytest.raises(ConfigError, match="holdout_size"):
        DataSpec(holdout_size=-1)
