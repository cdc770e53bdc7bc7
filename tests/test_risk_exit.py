"""Early exit with a guarantee: the oracle, the binomial p-value, Learn-then-Test calibration of λ."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from adacal.errors import ConfigError, DataError
from adacal.iat import ExitPolicy, evaluate_exits
from adacal.iat.risk import binomial_pvalue, calibrate_exit, default_grid, oracle_exit_steps, schedule_thresholds


def outputs(T: int, B: int, C: int = 5, seed: int = 0, drift: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step outputs whose running prediction settles at a random step: a noisy start, a class signal."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (B,), generator=g)
    strength = torch.rand(B, generator=g) * 2
    signal = torch.nn.functional.one_hot(y, C).double() * strength[:, None]
    steps = [torch.randn(B, C, generator=g, dtype=torch.float64) * (1.5 if t < 2 else drift) + signal
             for t in range(T)]
    return torch.stack(steps), y


def test_oracle_stops_where_the_running_prediction_settles() -> None:
    # one input, classes 0/1: running argmax per step 1, 0, 1, 1 -> settles at t=3
    x = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]], [[0.0, 4.0]], [[0.0, 1.0]]])
    assert oracle_exit_steps(x).tolist() == [3]
    # a prediction that never changes stops at t=1; one that changes at the last step runs to T
    x2 = torch.tensor([[[2.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 5.0]]])
    assert oracle_exit_steps(x2).tolist() == [1, 2]


def test_oracle_loses_nothing_and_no_rule_beats_it_losslessly() -> None:
    x, _ = outputs(8, 400)
    steps = oracle_exit_steps(x)
    run = x.cumsum(0)
    final = run[-1].argmax(1)
    at_exit = run[steps - 1, torch.arange(400)].argmax(1)
    assert torch.equal(at_exit, final)  # stopping at the oracle step never changes the prediction
    earlier = (steps > 1).nonzero().squeeze(1)  # one step earlier, each such input predicts otherwise
    before = run[steps[earlier] - 2, earlier].argmax(1)
    assert (before != final[earlier]).all()


def test_binomial_pvalue_is_the_binomial_tail() -> None:
    assert binomial_pvalue(3, 1000, 0.01) == pytest.approx(stats.binom.cdf(3, 1000, 0.01))
    assert binomial_pvalue(0, 1000, 0.01) == pytest.approx(0.99 ** 1000)
    with pytest.raises(ConfigError, match="epsilon"):
        binomial_pvalue(1, 10, 0.0)
    with pytest.raises(DataError, match="at least one"):
        binomial_pvalue(0, 0, 0.1)


def test_calibrated_rule_is_the_most_eager_certified_one() -> None:
    x, y = outputs(8, 2000, seed=1)
    policy, rec = calibrate_exit(x, y, epsilon=0.02, delta=0.1)
    assert rec.certified and policy.accumulate == "sum" and policy.score == "margin"
    assert policy.thresholds == tuple(rec.chosen * (8 - t) for t in range(8))  # λ per remaining step
    i = rec.grid.index(rec.chosen)
    assert all(p <= 0.1 for p in rec.pvalues[: i + 1])  # every λ up to the chosen one was rejected in order
    assert rec.pvalues[i + 1] > 0.1 if i + 1 < len(rec.grid) else True
    # the record's numbers are the replayed losses
    full = x.sum(0).argmax(1)
    res = evaluate_exits(x, policy, y)
    lost = int(((full == y) & (res.predictions != y)).sum())
    assert rec.losses[i] == lost and rec.mean_steps[i] == pytest.approx(res.mean_exit_step)
    assert res.mean_exit_step < 8  # it does exit early
    assert policy.to_dict()["certificate"]["chosen"] == rec.chosen
    assert ExitPolicy.from_dict(policy.to_dict()) == policy


def test_guarantee_holds_on_fresh_draws_of_the_same_distribution() -> None:
    """Over many calibration draws, the drop on a large fresh sample exceeds ε in at most ~δ of them."""
    eps, delta, exceed, runs = 0.03, 0.2, 0, 12
    test_x, test_y = outputs(6, 6000, seed=999)
    full_acc = float((test_x.sum(0).argmax(1) == test_y).double().mean())
    for k in range(runs):
        cx, cy = outputs(6, 500, seed=100 + k)
        policy, _ = calibrate_exit(cx, cy, epsilon=eps, delta=delta)
        drop = full_acc - float(evaluate_exits(test_x, policy, test_y).accuracy)
        exceed += drop > eps
    assert exceed <= math.ceil(2 * delta * runs)


def test_no_certificate_means_no_early_exit() -> None:
    x, y = outputs(4, 30, seed=2)  # too few inputs to certify a tiny ε
    policy, rec = calibrate_exit(x, y, epsilon=0.001, delta=0.05)
    assert not rec.certified and policy.thresholds == (math.inf,) * 4
    assert evaluate_exits(x, policy).mean_exit_step == 4


def test_flip_loss_needs_no_labels_and_is_more_cautious() -> None:
    x, y = outputs(8, 1500, seed=3)
    _, err = calibrate_exit(x, y, epsilon=0.02)
    _, flip = calibrate_exit(x, None, epsilon=0.02, loss="flip")
    assert flip.chosen >= err.chosen  # flips include the harmless ones: never a more eager λ
    with pytest.raises(DataError, match="labels"):
        calibrate_exit(x, None, epsilon=0.02, loss="error")
    with pytest.raises(ConfigError, match="delta"):
        calibrate_exit(x, y, epsilon=0.02, delta=1.5)


def test_default_grid_runs_from_cautious_to_eager() -> None:
    for score in ("margin", "confidence"):
        grid = default_grid(score)
        assert grid[0] == math.inf and grid[-1] == -math.inf
        assert all(a > b for a, b in zip(grid, grid[1:]))


def test_schedules_and_the_constant_family_replay_exactly() -> None:
    assert schedule_thresholds(0.5, 4) == (2.0, 1.5, 1.0, 0.5)
    assert schedule_thresholds(0.5, 3, "constant") == (0.5, 0.5, 0.5)
    assert schedule_thresholds(math.inf, 2) == (math.inf, math.inf)
    x, y = outputs(6, 800, seed=4)
    policy, rec = calibrate_exit(x, y, epsilon=0.03, score="confidence", schedule="constant", accumulate="mean")
    i = rec.grid.index(rec.chosen)
    res = evaluate_exits(x, policy, y)
    assert rec.mean_steps[i] == pytest.approx(res.mean_exit_step)
    with pytest.raises(ConfigError, match="schedule"):
        calibrate_exit(x, y, epsilon=0.03, schedule="linear")


def test_margin_score_is_the_lead_of_the_top_output() -> None:
    from adacal.iat import scores

    out = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    assert scores(out, "margin").tolist() == pytest.approx([0.5, 4.0])
    dense = torch.zeros(1, 2, 2, 2)
    dense[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert scores(dense, "margin").tolist() == pytest.approx([2.5])  # per pixel, mean over pixels
    assert scores(torch.ones(2, 1), "margin").tolist() == [math.inf, math.inf]  # one class: certain
