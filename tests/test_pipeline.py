"""End-to-end pipeline, sensitivity profiling, search wiring, early exit and persistence."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from adacal.calibrate import calibrate_thresholds, thresholds_per_phi
from adacal.convert import prepare
from adacal.errors import ConfigError
from adacal.iat import ExitPolicy, evaluate_exits, scores
from adacal.iat.runtime import run_early_exit
from adacal.knobs import excess_over
from adacal.persist import load_snn, save_snn
from adacal.pipeline import PipelineConfig, convert
from adacal.recipes import RECIPES
from adacal.sensitivity import SensitivityTable, profile


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    m.train()
    with torch.no_grad():  # realistic BN statistics for a random network
        for _ in range(3):
            m(torch.randn(32, 1, 8, 8))
    return m.eval()


@pytest.fixture(scope="module")
def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(2)]


def calibrated(T: int = 8, phi: int = 2) -> tuple[object, torch.Tensor]:
    m = small_cnn()
    x = torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    snn = prepare(m, x)
    for n in snn.neurons().values():
        n.set_phi(phi)
    calibrate_thresholds(snn, x, timesteps=T)
    return snn, x


def test_prefix_reuse_gives_the_naive_profile() -> None:
    snn, x = calibrated()
    fast = profile(snn, x, knob="phi", candidates=[1, 2, 3], timesteps=6)
    slow = profile(snn, x, knob="phi", candidates=[1, 2, 3], timesteps=6, reuse_prefix=False)
    assert fast.scores == slow.scores
    assert fast.costs == slow.costs
    assert list(fast.scores) == list(snn.neurons())  # keyed by layer name, in layer order


def test_profile_resumes_with_identical_results(tmp_path, monkeypatch) -> None:
    snn, x = calibrated()
    ckpt = tmp_path / "profile.json"
    full = profile(snn, x, knob="rho", candidates=[1.0, 2.0], timesteps=4)
    # interrupt after the first layer: the progress callback raises on the second layer
    def stop(i: int, n: int, name: str) -> None:
        if i == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        profile(snn, x, knob="rho", candidates=[1.0, 2.0], timesteps=4, checkpoint=ckpt, progress=stop)
    saved = json.loads(ckpt.read_text())
    assert len(saved["layers"]) == 1
    resumed = profile(snn, x, knob="rho", candidates=[1.0, 2.0], timesteps=4, checkpoint=ckpt)
    assert resumed.scores == full.scores and resumed.costs == full.costs
    # knobs are restored after profiling
    assert all(float(n.rho) == 1.0 for n in snn.neurons().values())


def test_sensitivity_table_json_round_trip() -> None:
    snn, x = calibrated()
    t = profile(snn, x, knob="phi", candidates=[1, 2], timesteps=4)
    back = SensitivityTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.scores == t.scores and back.costs == t.costs and back.candidates == t.candidates


def test_larger_phi_never_costs_fewer_spikes() -> None:
    snn, x = calibrated(phi=4)
    t = profile(snn, x, knob="phi", candidates=[1, 2, 4], timesteps=4)
    for layer, row in t.spikes.items():
        assert row[1] <= row[2] <= row[4], layer


def test_thresholds_per_phi_match_a_calibration_at_each_phi() -> None:
    snn, x = calibrated(phi=3)
    before = {k: (int(n.phi), n.theta.clone()) for k, n in snn.neurons().items()}
    table = thresholds_per_phi(snn, (1, 2, 4), timesteps=6, batches=[x])
    for k, n in snn.neurons().items():  # the model is left as it was
        assert int(n.phi) == before[k][0] and torch.equal(n.theta, before[k][1])
    for phi in (1, 2, 4):
        other, _ = calibrated(phi=phi)
        expect = calibrate_thresholds(other, x, timesteps=6)
        for k in expect:
            assert torch.equal(table[k][phi], expect[k]), (k, phi)


def test_profile_with_per_candidate_thresholds_runs_each_candidate_at_its_threshold() -> None:
    snn, x = calibrated(phi=4)
    name = list(snn.neurons())[1]
    neuron = snn.neurons()[name]
    theta0 = neuron.theta.clone()
    table = {k: {p: n.theta * (1.0 + 0.5 * p) for p in (1, 2)} for k, n in snn.neurons().items()}
    with_table = profile(snn, x, knob="phi", candidates=[1, 2], timesteps=4, layers=[name], thresholds=table)
    assert torch.equal(neuron.theta, theta0)  # restored
    for p in (1, 2):
        neuron.set_theta(table[name][p])
        by_hand = profile(snn, x, knob="phi", candidates=[p], timesteps=4, layers=[name])
        assert with_table.scores[name][p] == by_hand.scores[name][p]
        assert with_table.costs[name][p] == by_hand.costs[name][p]
    neuron.set_theta(theta0)
    plain = profile(snn, x, knob="phi", candidates=[1, 2], timesteps=4, layers=[name])
    assert plain.costs[name] != with_table.costs[name]  # the table really changed the run
    del table[name][2]
    with pytest.raises(ConfigError, match="thresholds table lacks"):
        profile(snn, x, knob="phi", candidates=[1, 2], timesteps=4, thresholds=table)


@pytest.mark.parametrize("method", list(RECIPES))
def test_every_method_runs_and_records(method: str, data) -> None:
    cfg = PipelineConfig(method=method, timesteps=4, phi_target=2, search_cost="spikes",
                         rho_candidates=(1.0, 2.0, 4.0))
    snn, rec = convert(small_cnn(), data, config=cfg)
    json.dumps(rec, allow_nan=False)  # serialisable
    names = list(snn.neurons())
    assert list(rec["knobs"]["phi"]) == names and list(rec["knobs"]["rho"]) == names
    if method in ("plain", "calibration"):
        assert set(rec["knobs"]["phi"].values()) == {1}
    if method == "burstfire":
        assert set(rec["knobs"]["phi"].values()) == {2}
    if method.startswith("adafire"):
        assert set(rec["sensitivity"]["phi"]) == set(names)
        front = rec["frontiers"]["phi"]
        assert front["chosen"][0] <= front["budget"] * (1 + 1e-9)
        assert all(1 <= p <= 4 for p in rec["knobs"]["phi"].values())
        assert "thresholds_per_phi" in rec["stage_times"]  # default: each φ profiled at its own threshold
    if method == "adafire+ssc":
        assert rec["frontiers"]["rho"]["chosen"][1] <= rec["frontiers"]["rho"]["budget"] * (1 + 1e-9)
    else:
        assert set(rec["knobs"]["rho"].values()) == {1.0}
    assert "thresholds" in rec["stage_times"]


def test_per_candidate_phi_profile_budget_is_burstfires_energy(data) -> None:
    """With per-candidate thresholds the φ budget is the profiled energy of uniform φ_target, which
    is what BurstFire's thresholds give; with the paper's profile it is measured at lower thresholds."""
    kw = dict(method="adafire", timesteps=4, phi_target=2, search_cost="spikes")
    _, per = convert(small_cnn(), data, config=PipelineConfig(phi_profile_thresholds="per_candidate", **kw))
    _, paper = convert(small_cnn(), data, config=PipelineConfig(phi_profile_thresholds="largest_phi", **kw))
    assert "thresholds_per_phi" in per["stage_times"]
    per_row = {k: row["2.0"] for k, row in per["spike_table"]["phi"].items()}
    paper_row = {k: row["2.0"] for k, row in paper["spike_table"]["phi"].items()}
    # per layer, φ_target at its own (larger) threshold fires no more than at the 2·φ_target threshold
    assert all(per_row[k] <= paper_row[k] for k in per_row)
    assert sum(per_row.values()) < sum(paper_row.values())


def test_excess_over_counts_only_increases() -> None:
    table = {"a": {1.0: (5.0, 0.30), 2.0: (3.0, 0.25), 4.0: (1.0, 0.50)},
             "b": {1.0: (4.0, 0.30), 2.0: (2.0, 0.30)}}
    out = excess_over(table, 1.0)
    assert out["a"] == {1.0: (5.0, 0.0), 2.0: (3.0, 0.0), 4.0: (1.0, pytest.approx(0.2))}
    assert out["b"] == {1.0: (4.0, 0.0), 2.0: (2.0, 0.0)}


@pytest.mark.parametrize("budget", ["excess", "sum"])
def test_ssc_budget_rules(budget: str, data) -> None:
    cfg = PipelineConfig(method="adafire+ssc", timesteps=4, phi_target=2, search_cost="spikes",  # the search alone
                         rho_candidates=(1.0, 1.5, 2.0, 4.0), sensitivity_budget=budget, check="none")
    _, rec = convert(small_cnn(), data, config=cfg)
    scores = rec["sensitivity"]["rho"]
    chosen = {k: scores[k][repr(float(r))] for k, r in rec["knobs"]["rho"].items()}
    at_one = {k: scores[k]["1.0"] for k in rec["knobs"]["rho"]}
    if budget == "excess":  # r = 1: only compression the profile sees as free
        assert all(chosen[k] <= at_one[k] for k in chosen)
        assert rec["frontiers"]["rho"]["budget"] == 0.0
    else:  # the paper's rule: the sum may trade one layer's gain for another's loss
        assert sum(chosen.values()) <= sum(at_one.values()) * (1 + 1e-9)


def test_energy_budget_monotone(data) -> None:
    """A larger energy budget never gives a worse total sensitivity."""
    totals = []
    for r in (1.0, 1.3, 2.0):
        cfg = PipelineConfig(method="adafire", timesteps=4, phi_target=2, search_cost="spikes",
                             energy_ratio=r)
        _, rec = convert(small_cnn(), data, config=cfg)
        totals.append(rec["frontiers"]["phi"]["chosen"][1])
    assert totals[0] >= totals[1] >= totals[2]


def test_bad_pipeline_config() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        PipelineConfig(method="magic")
    with pytest.raises(ConfigError, match="phi_profile_thresholds"):
        PipelineConfig(phi_profile_thresholds="shared")
    with pytest.raises(ConfigError, match="sensitivity_budget"):
        PipelineConfig(sensitivity_budget="total")
    with pytest.raises(ConfigError, match=">= 1 with sensitivity_budget='excess'"):
        PipelineConfig(sensitivity_ratio=0.9)
    PipelineConfig(sensitivity_ratio=0.9, sensitivity_budget="sum")  # the paper's rule allows r < 1
    with pytest.raises(ConfigError, match="search_cost"):
        PipelineConfig(search_cost="joules")
    with pytest.raises(ConfigError, match="timesteps"):
        PipelineConfig(timesteps=0)


def test_save_and_load_give_identical_outputs(tmp_path, data) -> None:
    cfg = PipelineConfig(method="adafire+ssc", timesteps=4, phi_target=2, search_cost="spikes",
                         rho_candidates=(1.0, 2.0))
    ann = small_cnn()
    snn, rec = convert(ann, data, config=cfg)
    save_snn(snn, rec, tmp_path / "snn")
    x = data[0][0]
    loaded, rec2 = load_snn(small_cnn(), tmp_path / "snn", x)
    assert rec2["knobs"]["phi"] == rec["knobs"]["phi"]
    assert torch.equal(snn.run(x, 4), loaded.run(x, 4))


class TestEarlyExit:
    def setup_method(self) -> None:
        self.snn, self.x = calibrated(T=6)
        self.full = self.snn.run(self.x, 6)

    def _policy(self, q: float) -> ExitPolicy:
        cum = self.full.cumsum(0)
        return ExitPolicy(thresholds=tuple(float(scores(cum[t]).quantile(q)) for t in range(6)))

    @pytest.mark.parametrize("q", [0.3, 0.6, 0.9])
    def test_runtime_matches_offline(self, q: float) -> None:
        pol = self._policy(q)
        off = evaluate_exits(self.full, pol)
        rt = run_early_exit(self.snn, self.x, pol)
        assert torch.equal(off.exit_steps, rt.exit_steps)
        assert torch.equal(off.predictions, rt.predictions)
        assert rt.steps_run == int(off.exit_steps.sum())

    def test_never_exit_reproduces_full_run(self) -> None:
        rt = run_early_exit(self.snn, self.x, ExitPolicy.constant(float("inf"), 6))
        assert bool((rt.exit_steps == 6).all())
        assert torch.allclose(rt.outputs, self.full.sum(0))

    def test_always_exit_stops_at_one(self) -> None:
        rt = run_early_exit(self.snn, self.x, ExitPolicy.constant(float("-inf"), 6))
        assert bool((rt.exit_steps == 1).all())
        assert torch.allclose(rt.outputs, self.full[0])

    def test_batch_of_one_and_T1(self) -> None:
        rt = run_early_exit(self.snn, self.x[:1], self._policy(0.5))
        off = evaluate_exits(self.snn.run(self.x[:1], 6), self._policy(0.5))
        assert torch.equal(rt.exit_steps, off.exit_steps)
        one = run_early_exit(self.snn, self.x, ExitPolicy.constant(0.5, 1))
        assert bool((one.exit_steps == 1).all())

    def test_spikes_count_only_steps_run(self) -> None:
        with self.snn.record_activity():
            run_early_exit(self.snn, self.x, ExitPolicy.constant(float("-inf"), 6))
            early = sum(float(c.sum()) for c in self.snn.spike_counts().values())
        with self.snn.record_activity():
            self.snn.run(self.x, 1)
            one_step = sum(float(c.sum()) for c in self.snn.spike_counts().values())
        assert early == one_step


def test_search_cost_units(data) -> None:
    """``sops`` costs each spike by the synapses it drives (≥ 1 each); ``spikes`` counts spikes."""
    common = dict(method="adafire", timesteps=4, phi_target=2)
    _, by_spikes = convert(small_cnn(), data, config=PipelineConfig(search_cost="spikes", **common))
    _, by_sops = convert(small_cnn(), data, config=PipelineConfig(search_cost="sops", **common))
    spikes, sops = by_spikes["energy_table"]["phi"], by_sops["energy_table"]["phi"]
    assert spikes.keys() == sops.keys()
    for layer in spikes:
        for value in spikes[layer]:
            assert sops[layer][value] >= spikes[layer][value]
    assert by_spikes["spike_table"]["phi"] == by_sops["spike_table"]["phi"]  # same profile either way
    # the first neurons feed a 3x3 conv with 8 output channels: up to 72 synapses per spike
    first = next(iter(sops))
    assert sops[first]["2.0"] > 8 * spikes[first]["2.0"]


def test_exit_policy_saved_with_the_snn(tmp_path, data) -> None:
    snn, x = calibrated(T=4)
    policy = ExitPolicy.constant(0.5, 4)
    save_snn(snn, {"method": "test"}, tmp_path / "s", exit_policy=policy)
    _, rec = load_snn(small_cnn(), tmp_path / "s", x)
    assert ExitPolicy.from_dict(rec["exit_policy"]) == policy


def test_early_exit_energy_counts_only_steps_run() -> None:
    from adacal.energy import EnergyModel

    snn, x = calibrated(T=6)
    model = EnergyModel.build(snn, x[:1])
    early = run_early_exit(snn, x, ExitPolicy.constant(float("-inf"), 6), energy=model)
    full = run_early_exit(snn, x, ExitPolicy.constant(float("inf"), 6), energy=model)
    assert early.energy.timesteps == 1 and full.energy.timesteps == 6
    assert early.energy.sops_per_image < full.energy.sops_per_image


def test_early_exit_dense_outputs() -> None:
    """Segmentation-shaped outputs: per-image scores, per-pixel predictions, same as offline."""
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 5, 1)).eval()
    x = torch.randn(6, 3, 8, 8)
    snn = prepare(seg, x)
    calibrate_thresholds(snn, x, timesteps=5)
    full = snn.run(x, 5)
    cum = full.cumsum(0)
    pol = ExitPolicy(thresholds=tuple(float(scores(cum[t]).median()) for t in range(5)))
    rt, off = run_early_exit(snn, x, pol), evaluate_exits(full, pol)
    assert rt.predictions.shape == (6, 8, 8)
    assert torch.equal(rt.exit_steps, off.exit_steps) and torch.equal(rt.predictions, off.predictions)
