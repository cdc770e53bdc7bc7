"""Tests for Input-aware Adaptive Timesteps (adacal.iat): scores, eq. 15 fitting, exit rule, replay."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adacal.errors import ConfigError, DataError, ShapeError
from adacal.iat import (
    ExitPolicy,
    ExitStatistics,
    evaluate_exits,
    exit_mask,
    fixed_T_accuracy,
    normalized_entropy,
    scores,
    sweep_alpha_base,
)

LOG3 = math.log(3.0)
# p = (3/4, 1/4): H = -(3/4 ln 3/4 + 1/4 ln 1/4), normalised by ln 2.
H_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2.0)


# ---------------------------------------------------------------------------------------------
# direct (loop-and-math) reference implementation used to check the tensor code
# ---------------------------------------------------------------------------------------------
def _ref_norm_entropy(logits: list[float]) -> float:
    m = max(logits)
    ex = [math.exp(v - m) for v in logits]
    z = sum(ex)
    p = [e / z for e in ex]
    return -sum(q * math.log(q) for q in p if q > 0) / math.log(len(logits))


def _ref_fit(
    out: torch.Tensor, labels: torch.Tensor, alpha_base: float, delta: float, mean: bool
) -> list[float]:
    T, B, _ = out.shape
    e_bar = []
    for t in range(1, T + 1):
        ents = []
        for b in range(B):
            o = [float(sum(out[k, b, c] for k in range(t))) for c in range(out.shape[2])]
            pred = max(range(len(o)), key=lambda c: o[c])
            if pred == int(labels[b]):
                ents.append(_ref_norm_entropy([v / t for v in o] if mean else o))
        e_bar.append(sum(ents) / len(ents))
    e_min = min(e_bar)
    return [alpha_base + (1 - alpha_base) * math.exp(-(e - e_min) / delta) for e in e_bar]


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------
def test_entropy_and_confidence_scores_hand_computed() -> None:
    x = torch.tensor([[0.0, 0.0], [LOG3, 0.0], [0.0, LOG3]])
    assert scores(x, "entropy").tolist() == pytest.approx([0.0, 1 - H_34, 1 - H_34], abs=1e-6)
    assert scores(x, "confidence").tolist() == pytest.approx([0.5, 0.75, 0.75], abs=1e-6)
    assert normalized_entropy(x).tolist() == pytest.approx([1.0, H_34, H_34], abs=1e-6)
    # Four uniform classes: maximum entropy, confidence 1/4.
    u = torch.zeros(1, 4)
    assert scores(u).item() == pytest.approx(0.0, abs=1e-6)
    assert scores(u, "confidence").item() == pytest.approx(0.25)


def test_scores_extreme_logits_single_class_and_half_precision() -> None:
    huge = torch.tensor([[1e4, 0.0, -1e4]])
    s = scores(huge)
    assert torch.isfinite(s).all() and s.item() == pytest.approx(1.0)
    assert scores(torch.randn(3, 1)).tolist() == [1.0, 1.0, 1.0]  # a single class is certain
    half = torch.tensor([[LOG3, 0.0]], dtype=torch.float16)
    out = scores(half)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(1 - H_34, abs=1e-3)
    assert scores(torch.tensor([[LOG3, 0.0]], dtype=torch.float64)).dtype == torch.float64


def test_dense_scores_mean_and_min_over_pixels() -> None:
    # One image, two classes, 1x2 pixels: pixel a uniform (score 0), pixel b p=(3/4,1/4).
    x = torch.tensor([[[[0.0, LOG3]], [[0.0, 0.0]]]])  # [B=1, C=2, H=1, W=2]
    assert x.shape == (1, 2, 1, 2)
    assert scores(x, "entropy", "mean").item() == pytest.approx((1 - H_34) / 2, abs=1e-6)
    assert scores(x, "entropy", "min").item() == pytest.approx(0.0, abs=1e-6)
    assert scores(x, "confidence", "mean").item() == pytest.approx((0.5 + 0.75) / 2, abs=1e-6)
    assert scores(x, "confidence", "min").item() == pytest.approx(0.5, abs=1e-6)


def test_many_classes() -> None:
    C = 1000
    x = torch.zeros(2, C)
    x[1, 7] = 50.0
    s = scores(x)
    assert s[0].item() == pytest.approx(0.0, abs=1e-5)
    assert s[1].item() == pytest.approx(1.0, abs=1e-5)
    out = torch.randn(4, 8, C)
    labels = torch.randint(0, C, (8,))
    res = evaluate_exits(out, ExitPolicy.constant(0.5, 4), labels)
    assert res.predictions.shape == (8,) and int(res.predictions.max()) < C
    assert sum(res.histogram) == 8
    fit_labels = out[0].argmax(1)  # every sample correct at step 1
    pol = ExitPolicy.fit(out, fit_labels, alpha_base=0.9)
    assert pol.T == 4 and all(0.9 <= a <= 1.0 for a in pol.thresholds)


# ---------------------------------------------------------------------------------------------
# fitting (eq. 15)
# ---------------------------------------------------------------------------------------------
def _tiny_training_set() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 6, 3, generator=g) * 2.0
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    # make sure each step has at least one correct sample so the reference is defined
    out[:, 0, 0] += 10.0
    return out, labels


@pytest.mark.parametrize("accumulate", ["sum", "mean"])
@pytest.mark.parametrize(("alpha_base", "delta"), [(0.6, 1.0), (0.9, 0.25), (0.0, 3.0)])
def test_fit_matches_direct_computation(accumulate: str, alpha_base: float, delta: float) -> None:
    out, labels = _tiny_training_set()
    pol = ExitPolicy.fit(out, labels, alpha_base=alpha_base, delta=delta, accumulate=accumulate)
    ref = _ref_fit(out.double(), labels, alpha_base, delta, mean=accumulate == "mean")
    assert list(pol.thresholds) == pytest.approx(ref, abs=1e-6)
    assert pol.T == 3 and pol.alpha_base == alpha_base and pol.delta == delta
    assert pol.accumulate == accumulate
    # range α_base..1, with α = 1 at the lowest-entropy step
    assert max(pol.thresholds) == pytest.approx(1.0)
    assert all(alpha_base - 1e-12 <= a <= 1.0 + 1e-12 for a in pol.thresholds)


def test_fit_two_step_hand_example() -> None:
    # Ē_1 averages only the one correct sample; Ē_2 averages both.
    out = torch.tensor(
        [
            [[LOG3, 0.0], [LOG3, 0.0]],  # t=1: s0 p=(.75,.25) correct; s1 predicts 0, label 1 -> wrong
            [[100.0, 0.0], [0.0, 2 * LOG3]],  # t=2: s0 certain; s1 O=(log3, 2log3) -> correct
        ]
    )
    labels = torch.tensor([0, 1])
    stats = ExitStatistics.from_outputs(out, labels)
    assert stats.count_correct == (1, 2) and stats.count_all == 2
    e1 = H_34
    e2 = (0.0 + _ref_norm_entropy([LOG3, 2 * LOG3])) / 2
    assert stats.mean_entropy() == pytest.approx((e1, e2), abs=1e-6)
    pol = ExitPolicy.from_statistics(stats, alpha_base=0.6, delta=1.0)
    e_min = min(e1, e2)
    assert pol.thresholds == pytest.approx(
        (0.6 + 0.4 * math.exp(-(e1 - e_min)), 0.6 + 0.4 * math.exp(-(e2 - e_min))), abs=1e-6
    )


def test_fit_falls_back_to_all_samples_when_none_correct(caplog: pytest.LogCaptureFixture) -> None:
    out = torch.tensor([[[0.0, LOG3]], [[5.0, 0.0]]])  # t=1 wrong (predicts 1), t=2 correct
    labels = torch.tensor([0])
    with caplog.at_level(logging.WARNING, logger="adacal.iat.policy"):
        pol = ExitPolicy.fit(out, labels)
    assert "timestep 1" in caplog.text
    assert pol.mean_entropy is not None
    assert pol.mean_entropy[0] == pytest.approx(H_34, abs=1e-6)  # mean over all samples
    stats = ExitStatistics.from_outputs(out, labels)
    assert stats.mean_entropy("all")[1] == pytest.approx(stats.mean_entropy("correct")[1])


def test_fit_batches_equals_fit_on_concatenation_and_stats_add_exactly() -> None:
    out, labels = _tiny_training_set()
    whole = ExitPolicy.fit(out, labels, alpha_base=0.7)
    parts = [(out[:, :2], labels[:2]), (out[:, 2:5], labels[2:5]), (out[:, 5:], labels[5:])]
    batched = ExitPolicy.fit_batches(iter(parts), alpha_base=0.7)
    assert batched.thresholds == pytest.approx(whole.thresholds, abs=1e-9)
    s_whole = ExitStatistics.from_outputs(out, labels)
    s_sum = ExitStatistics.from_outputs(*parts[0])
    for o, y in parts[1:]:
        s_sum = s_sum + ExitStatistics.from_outputs(o, y)
    assert s_sum.count_correct == s_whole.count_correct and s_sum.count_all == s_whole.count_all
    assert s_sum.sum_entropy_correct == pytest.approx(s_whole.sum_entropy_correct, abs=1e-9)


def test_with_alpha_base_rederives_thresholds() -> None:
    out, labels = _tiny_training_set()
    a = ExitPolicy.fit(out, labels, alpha_base=0.6)
    b = ExitPolicy.fit(out, labels, alpha_base=0.95, delta=0.5)
    assert a.with_alpha_base(0.95, 0.5).thresholds == pytest.approx(b.thresholds, abs=1e-12)


def test_fit_T1_and_confidence_score() -> None:
    out = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    pol = ExitPolicy.fit(out, torch.tensor([0, 1]), score="confidence")
    assert pol.thresholds == (1.0,) and pol.score == "confidence"
    res = evaluate_exits(out, pol, torch.tensor([0, 1]))
    assert res.exit_steps.tolist() == [1, 1] and res.accuracy == 1.0 and res.histogram == (2,)


# ---------------------------------------------------------------------------------------------
# exit rule and replay
# ---------------------------------------------------------------------------------------------
def test_plus_inf_runs_full_T_and_minus_inf_exits_at_1() -> None:
    out = torch.randn(5, 7, 4)
    labels = torch.randint(0, 4, (7,))
    full = evaluate_exits(out, ExitPolicy.constant(math.inf, 5), labels)
    assert full.exit_steps.tolist() == [5] * 7 and full.mean_exit_step == 5.0
    assert full.histogram == (0, 0, 0, 0, 7)
    assert torch.equal(full.predictions, out.sum(0).argmax(1))
    assert full.accuracy == pytest.approx(fixed_T_accuracy(out, labels)[-1])
    first = evaluate_exits(out, ExitPolicy.constant(-math.inf, 5), labels)
    assert first.exit_steps.tolist() == [1] * 7 and first.mean_exit_step == 1.0
    assert first.histogram == (7, 0, 0, 0, 0)
    assert torch.equal(first.predictions, out[0].argmax(1))
    assert first.accuracy == pytest.approx(fixed_T_accuracy(out, labels)[0])


def test_all_samples_exit_at_same_step_and_batch_of_one() -> None:
    out = torch.randn(4, 3, 5)
    pol = ExitPolicy(thresholds=(math.inf, math.inf, -math.inf, math.inf))
    res = evaluate_exits(out, pol)
    assert res.exit_steps.tolist() == [3, 3, 3] and res.histogram == (0, 0, 3, 0) and res.accuracy is None
    assert torch.equal(res.predictions, out[:3].sum(0).argmax(1))
    one = evaluate_exits(out[:, :1], pol, torch.tensor([2]))
    assert one.num_samples == 1 and one.exit_steps.tolist() == [3] and one.accuracy in (0.0, 1.0)


def test_exit_mask_threshold_semantics() -> None:
    x = torch.tensor([[0.0, 0.0], [LOG3, 0.0], [100.0, 0.0]])  # scores 0, 1-H_34 (~0.189), ~1
    pol = ExitPolicy(thresholds=(0.1, 0.5, 0.9))
    assert exit_mask(pol, x, 1).tolist() == [False, True, True]
    assert exit_mask(pol, x, 2).tolist() == [False, False, True]
    assert pol.exit_mask(x, 3).tolist() == [True, True, True]  # everything stops at T
    # strict inequality: score == α does not exit
    eq = ExitPolicy(thresholds=(0.0, 1.0))
    assert exit_mask(eq, x[:1], 1).tolist() == [False]
    assert exit_mask(pol, x[:0], 1).shape == (0,)  # no running samples left
    # accumulate="mean" scores O_t / t: at t=2 the running sum 2*(log3, 0) scores like (log3, 0)
    mean_pol = ExitPolicy(thresholds=(0.5, 0.18, 0.5), accumulate="mean")
    sum_pol = ExitPolicy(thresholds=(0.5, 0.5, 0.5))
    two = torch.tensor([[2 * LOG3, 0.0]])
    assert exit_mask(mean_pol, two, 2).tolist() == [True]
    assert exit_mask(ExitPolicy(thresholds=(0.5, 0.19, 0.5), accumulate="mean"), two, 2).tolist() == [False]
    assert exit_mask(sum_pol, two, 2).tolist() == [True]  # p=(0.9,0.1): score ~0.53


def test_replay_matches_streaming_runtime_loop() -> None:
    """The simulator calls exit_mask on running samples and drops exited ones: same result."""
    g = torch.Generator().manual_seed(3)
    out = torch.randn(6, 20, 5, generator=g) * 1.5
    labels = torch.randint(0, 5, (20,), generator=g)
    pol = ExitPolicy.fit(out, labels, alpha_base=0.2)
    res = evaluate_exits(out, pol, labels)
    idx = torch.arange(20)
    running = torch.zeros(20, 5)
    steps = torch.zeros(20, dtype=torch.long)
    preds = torch.zeros(20, dtype=torch.long)
    for t in range(1, 7):
        running = running + out[t - 1, idx]
        m = exit_mask(pol, running, t)
        steps[idx[m]] = t
        preds[idx[m]] = running[m].argmax(1)
        idx, running = idx[~m], running[~m]
    assert idx.numel() == 0
    assert torch.equal(steps, res.exit_steps) and torch.equal(preds, res.predictions)
    assert res.mean_exit_step == pytest.approx(steps.double().mean().item())
    assert 1.0 <= res.mean_exit_step <= 6.0


def test_dense_segmentation_outputs() -> None:
    g = torch.Generator().manual_seed(1)
    T, B, C, H, W = 3, 2, 4, 5, 6
    out = torch.randn(T, B, C, H, W, generator=g)
    labels = torch.randint(0, C, (B, H, W), generator=g)
    labels[0, 0, 0] = 255
    with pytest.raises(DataError, match="ignore_index"):
        ExitPolicy.fit(out, labels)
    pol = ExitPolicy.fit(out, labels, reduction="min", ignore_index=255)
    assert pol.reduction == "min" and pol.T == T
    res = evaluate_exits(out, ExitPolicy.constant(math.inf, T, reduction="min"), labels, ignore_index=255)
    pred = out.sum(0).argmax(1)
    assert res.predictions.shape == (B, H, W) and torch.equal(res.predictions, pred)
    valid = labels != 255
    assert res.accuracy == pytest.approx(((pred == labels) & valid).sum().item() / valid.sum().item())
    acc = fixed_T_accuracy(out, labels, ignore_index=255)
    assert len(acc) == T and acc[-1] == pytest.approx(res.accuracy)
    # dense correctness: an image counts as correct when pixel accuracy >= 0.5
    perfect = torch.nn.functional.one_hot(labels.clamp(max=C - 1), C).permute(0, 3, 1, 2).float() * 5
    stats = ExitStatistics.from_outputs(perfect.unsqueeze(0), labels, ignore_index=255)
    assert stats.count_correct == (B,)


def test_fixed_T_accuracy_hand_values() -> None:
    out = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 3.0], [0.0, 0.5]]])
    labels = torch.tensor([1, 0])
    # t=1: preds (0,0) -> 1/2; t=2: sums (1,3)->1 ok, (1,0.5)->0 ok -> 1.0
    assert fixed_T_accuracy(out, labels) == [0.5, 1.0]


def test_sweep_alpha_base_curve() -> None:
    g = torch.Generator().manual_seed(2)
    train = torch.randn(4, 30, 3, generator=g)
    train_y = torch.randint(0, 3, (30,), generator=g)
    test = torch.randn(4, 10, 3, generator=g)
    test_y = torch.randint(0, 3, (10,), generator=g)
    curve = sweep_alpha_base(test, test_y, train, train_y, [1.0, 0.5, -1e6])
    assert [c[0] for c in curve] == [1.0, 0.5, -1e6]
    a_hi, t_hi, acc_hi = curve[0]
    # α_base = 1 makes every α_t = 1, which no score exceeds: no early exit
    assert t_hi == 4.0 and acc_hi == pytest.approx(fixed_T_accuracy(test, test_y)[-1])
    assert all(1.0 <= t <= 4.0 and 0.0 <= acc <= 1.0 for _, t, acc in curve)
    assert curve[2][1] <= curve[1][1] <= curve[0][1]  # lower α_base never exits later
    with pytest.raises(ConfigError, match="alpha_bases is empty"):
        sweep_alpha_base(test, test_y, train, train_y, [])


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 4),
    B=st.integers(1, 5),
    C=st.integers(1, 6),
    alpha=st.floats(-0.5, 1.5),
    seed=st.integers(0, 2**16),
)
def test_replay_invariants(T: int, B: int, C: int, alpha: float, seed: int) -> None:
    out = torch.randn(T, B, C, generator=torch.Generator().manual_seed(seed)) * 3
    res = evaluate_exits(out, ExitPolicy.constant(alpha, T))
    assert sum(res.histogram) == B and len(res.histogram) == T
    assert int(res.exit_steps.min()) >= 1 and int(res.exit_steps.max()) <= T
    s = scores(out.sum(0))
    assert bool(((s >= 0) & (s <= 1)).all())


# ---------------------------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------------------------
def test_json_round_trip_with_infinities_and_fitted_policy() -> None:
    p = ExitPolicy(
        thresholds=(math.inf, -math.inf, 0.1 + 0.2, 1.0),
        score="confidence",
        accumulate="mean",
        reduction="min",
    )
    text = json.dumps(p.to_dict(), allow_nan=False)  # strict JSON: no Infinity/NaN literals
    assert '"inf"' in text and '"-inf"' in text
    back = ExitPolicy.from_dict(json.loads(text))
    assert back == p and back.thresholds[2] == 0.1 + 0.2
    out, labels = _tiny_training_set()
    fitted = ExitPolicy.fit(out, labels, alpha_base=0.37, delta=0.3)
    assert ExitPolicy.from_dict(json.loads(json.dumps(fitted.to_dict(), allow_nan=False))) == fitted
    assert ExitPolicy.from_dict({"thresholds": [float("inf"), "-inf"]}).thresholds == (math.inf, -math.inf)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_input_validation_errors() -> None:
    pol = ExitPolicy.constant(0.5, 3)
    good = torch.randn(3, 2, 4)
    bad = good.clone()
    bad[1, 0, 2] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        evaluate_exits(bad, pol)
    with pytest.raises(ShapeError, match=r"\[T, B, C, \*spatial\]"):
        evaluate_exits(torch.randn(3, 4), pol)
    with pytest.raises(ShapeError, match="T=2 timesteps but the policy has 3"):
        evaluate_exits(torch.randn(2, 2, 4), pol)
    with pytest.raises(DataError, match="empty batch"):
        evaluate_exits(torch.randn(3, 0, 4), pol)
    with pytest.raises(DataError, match="torch.Tensor"):
        evaluate_exits([[1.0]], pol)  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="labels has shape"):
        evaluate_exits(good, pol, torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="outside"):
        evaluate_exits(good, pol, torch.tensor([0, 4]))
    with pytest.raises(DataError, match="integer class ids"):
        fixed_T_accuracy(good, torch.tensor([0.0, 1.0]))
    with pytest.raises(ConfigError, match="must be an ExitPolicy"):
        evaluate_exits(good, "policy")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="cum_output"):
        exit_mask(pol, torch.randn(4), 1)
    with pytest.raises(ConfigError, match="outside 1..3"):
        exit_mask(pol, good[0], 4)
    with pytest.raises(ConfigError, match="outside 1..3"):
        exit_mask(pol, good[0], 0)
    with pytest.raises(DataError, match="NaN"):
        ExitPolicy.fit(bad, torch.tensor([0, 1]))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="kind='softmax'"):
        scores(torch.randn(2, 3), "softmax")
    with pytest.raises(ConfigError, match="reduction='max'"):
        scores(torch.randn(2, 3), "entropy", "max")
    with pytest.raises(ConfigError, match="T must be an integer >= 1"):
        ExitPolicy.constant(0.5, 0)
    with pytest.raises(ConfigError, match="NaN"):
        ExitPolicy(thresholds=(0.5, float("nan")))
    with pytest.raises(ConfigError, match="empty"):
        ExitPolicy(thresholds=())
    with pytest.raises(ConfigError, match="accumulate='cumsum'"):
        ExitPolicy(thresholds=(0.5,), accumulate="cumsum")
    out, labels = _tiny_training_set()
    with pytest.raises(ConfigError, match="delta must be > 0"):
        ExitPolicy.fit(out, labels, delta=0.0)
    with pytest.raises(ConfigError, match="alpha_base must be finite"):
        ExitPolicy.fit(out, labels, alpha_base=math.inf)
    with pytest.raises(ConfigError, match="needs a fitted policy"):
        ExitPolicy.constant(0.5, 3).with_alpha_base(0.7)
    with pytest.raises(DataError, match="iterable was empty"):
        ExitPolicy.fit_batches([])
    with pytest.raises(ConfigError, match="different settings"):
        ExitStatistics.from_outputs(out, labels) + ExitStatistics.from_outputs(out[:2], labels)
    with pytest.raises(ConfigError, match="unknown ExitPolicy keys"):
        ExitPolicy.from_dict({"thresholds": [0.5], "alpha": 1})
    with pytest.raises(ConfigError, match="only 'inf' and '-inf'"):
        ExitPolicy.from_dict({"thresholds": ["nan"]})
    with pytest.raises(ConfigError, match="missing 'thresholds'"):
        ExitPolicy.from_dict({"score": "entropy"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_tensors() -> None:
    out = torch.randn(3, 4, 5, device="cuda")
    labels = torch.randint(0, 5, (4,), device="cuda")
    pol = ExitPolicy.fit(out, labels)
    res = evaluate_exits(out, pol, labels)
    assert res.exit_steps.device.type == "cuda" and exit_mask(pol, out[0], 1).device.type == "cuda"
