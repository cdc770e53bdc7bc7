"""How far can a certified early exit go on this network? Exit scores compared on recorded outputs.

The library's certified exit (``adacal.iat.calibrate_exit``) stops an input when the lead of its
running output exceeds λ per remaining step. On the zoo ResNet-20 it misses the issue's targets
(≤ 35 % of T at T=8, ≤ 25 % at T=16 and 32, for ≤ 0.3 points) — and its best member chosen in
hindsight misses them too (``iat_tradeoff.md``). This probe asks whether a better *score* would
close the gap, on the per-step outputs ``iat_tradeoff.py`` recorded (``runs/benchmarks/iat/``):

* ``margin / remaining``: the library's rule (lead over λ·(T − t + 1));
* ``margin / sqrt(remaining)``: a random-walk schedule instead of a worst-case one;
* ``margin + step / remaining``: the lead plus the current step's own lead, signed by whether the
  step agrees with the running prediction (recent steps are better than the first ones);
* ``learned``: a small MLP on ten trajectory features (leads, confidence, steps since the
  prediction last changed, the current step's lead and agreement, t/T) predicting "the prediction
  at t is the one at T" — fitted on half of the held-out images.

Every score is certified the same way (Learn-then-Test, fixed-sequence binomial tests, ε = 0.3
points, δ = 0.1, error loss) on the *other* half of the held-out images, with thresholds from the
first half's score quantiles (so the grid does not depend on the data it is certified on); the
certified rule is then applied to the test set. Also reported, for each score, its best threshold
chosen in hindsight with the test labels — not a rule, the score's own limit. The learned score is
not part of the library: this benchmark measures whether it would pay.

    python benchmarks/iat_tradeoff.py              # records the outputs (cached)
    python benchmarks/exit_limits.py [--timesteps 8 16 32]
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch
from _common import REPO, command, machine, start, write_results

from adacal.iat.risk import binomial_pvalue, oracle_exit_steps

CACHE = REPO / "runs" / "benchmarks" / "iat"
EPSILON, DELTA = 0.3, 0.1  # accuracy points, 1 − confidence


def features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per step and input: the learned score's features ``[T, B, 10]``, the running prediction ``[T, B]``
    and the hand-made scores (exit when score > threshold)."""
    T = x.shape[0]
    x = x.double()
    running = x.cumsum(0)
    top = running.topk(3, dim=2).values
    lead, lead2 = top[..., 0] - top[..., 1], top[..., 0] - top[..., 2]
    pred = running.argmax(2)
    t = torch.arange(1, T + 1, dtype=torch.float64).view(T, 1).expand_as(lead)
    remaining = T - t + 1
    conf = torch.softmax(running / t.unsqueeze(2), 2).amax(2)
    since = torch.zeros_like(lead)
    for k in range(1, T):
        since[k] = torch.where(pred[k] == pred[k - 1], since[k - 1] + 1, torch.zeros_like(since[k]))
    step_top = x.topk(2, dim=2).values
    step_lead = step_top[..., 0] - step_top[..., 1]
    agree = (x.argmax(2) == pred).double()
    feats = torch.stack([lead / remaining, lead / t, torch.log1p(lead), lead2 / remaining, conf, since, t / T,
                         step_lead, agree, torch.log1p(lead / remaining)], -1)
    signed_step = step_lead * (2 * agree - 1)
    hand = {"margin / remaining": lead / remaining, "margin / sqrt(remaining)": lead / remaining.sqrt(),
            "margin + step / remaining": (lead + signed_step) / remaining}
    return feats, pred, hand


def fit_mlp(feats: torch.Tensor, target: torch.Tensor, seed: int = 0) -> Any:
    """A 10-32-1 MLP, full-batch Adam, on standardised features (steps 1..T−1: at T every input stops)."""
    torch.manual_seed(seed)
    X = feats[:-1].reshape(-1, feats.shape[-1])
    y = target[:-1].reshape(-1)
    mu, sd = X.mean(0), X.std(0) + 1e-9
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(800):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net((X - mu) / sd).squeeze(1), y)
        loss.backward()
        opt.step()
    net.eval()
    return lambda f: net((f - mu) / sd).squeeze(-1).detach()


def exits(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """The first step (0-based) whose score passes ``threshold``; every input stops at T."""
    leave = score > threshold
    leave[-1] = True
    return leave.int().argmax(0)


def outcome(pred: torch.Tensor, y: torch.Tensor, first: torch.Tensor) -> tuple[int, float, float]:
    """Inputs right at T but wrong at their exit, the accuracy drop (points) and the mean steps."""
    at_exit = pred[first, torch.arange(y.numel())]
    lost = int(((pred[-1] == y) & (at_exit != y)).sum())
    drop = 100 * float((pred[-1] == y).double().mean() - (at_exit == y).double().mean())
    return lost, drop, float((first + 1).double().mean())


def certify(score: torch.Tensor, pred: torch.Tensor, y: torch.Tensor, grid: list[float]) -> float:
    """The most eager threshold whose risk ≤ ε is certified at level δ (fixed-sequence testing from the
    cautious end); +inf (never exit early) if none."""
    chosen = float("inf")
    for th in grid:  # cautious → eager
        lost, _, _ = outcome(pred, y, exits(score, th))
        if binomial_pvalue(lost, y.numel(), EPSILON / 100) > DELTA:
            break
        chosen = th
    return chosen


def analyse(T: int, rec: dict[str, torch.Tensor]) -> dict[str, Any]:
    hold, hy, test, ty = rec["holdout_out"], rec["holdout_y"], rec["test_out"], rec["test_y"]
    half = hold.shape[1] // 2
    f_fit, p_fit, h_fit = features(hold[:, :half])
    f_cert, p_cert, h_cert = features(hold[:, half:])
    f_test, p_test, h_test = features(test)
    learned = fit_mlp(f_fit, (p_fit == p_fit[-1]).double())
    scores = {name: (h_fit[name], h_cert[name], h_test[name]) for name in h_fit}
    scores["learned"] = (learned(f_fit), learned(f_cert), learned(f_test))
    full = 100 * float((p_test[-1] == ty).double().mean())
    oracle = float(oracle_exit_steps(test).double().mean())
    rows = []
    for name, (s_fit, s_cert, s_test) in scores.items():
        # thresholds: 400 quantiles of the fitting half's scores, high (cautious) to low (eager)
        q = torch.quantile(s_fit[:-1].flatten().float(), torch.linspace(1, 0, 400)).double().tolist()
        grid = sorted(set(q), reverse=True)
        th = certify(s_cert, p_cert, hy[half:], grid)
        _, drop, steps = outcome(p_test, ty, exits(s_test, th))
        best = (float(T), 0.0)
        for g in grid:
            _, d, s = outcome(p_test, ty, exits(s_test, g))
            if d <= EPSILON + 1e-9 and s < best[0]:
                best = (s, d)
        rows.append({"score": name, "certified_mean_timesteps": steps, "certified_drop": drop,
                     "hindsight_mean_timesteps": best[0], "hindsight_drop": best[1]})
        logging.info("T=%d %s: certified %.2f steps (%.0f%%), drop %+.2f; hindsight %.2f steps (%.0f%%)", T, name,
                     steps, 100 * steps / T, drop, best[0], 100 * best[0] / T)
    return {"T": T, "full_accuracy": full, "oracle_mean_timesteps": oracle, "fit_images": half,
            "certify_images": hold.shape[1] - half, "test_images": int(ty.numel()), "rows": rows}


def markdown(runs: list[dict[str, Any]], header: list[str]) -> str:
    lines = [*header, "", "| T | score | certified: % of T | × oracle | drop (points) | hindsight limit: % of T | "
             "drop |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        T, o = r["T"], r["oracle_mean_timesteps"]
        for x in r["rows"]:
            lines.append(f"| {T} | {x['score']} | {100 * x['certified_mean_timesteps'] / T:.0f}% | "
                         f"{x['certified_mean_timesteps'] / o:.2f} | {x['certified_drop']:+.2f} | "
                         f"{100 * x['hindsight_mean_timesteps'] / T:.0f}% | {x['hindsight_drop']:+.2f} |")
        lines.append(f"| {T} | oracle (the limit) | {100 * o / T:.0f}% | 1.00 | +0.00 | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="burstfire")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--holdout", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    start(args.threads)
    t0 = time.perf_counter()
    runs = []
    for T in args.timesteps:
        path = CACHE / f"{args.method}_T{T}_holdout{args.holdout}.pt"
        if not path.is_file():
            raise SystemExit(f"no recorded outputs at {path}; run python benchmarks/iat_tradeoff.py --timesteps {T} "
                             f"--holdout {args.holdout} first")
        runs.append(analyse(T, torch.load(path)))
    header = ["# Early exit: how far a certified rule can go, by exit score (CIFAR-10, zoo ResNet-20)", "",
              f"Command: `{command()}`", f"Machine: {machine()}",
              f"Network: {args.method} (outputs recorded by `benchmarks/iat_tradeoff.py`); full test set; the "
              f"learned score is fitted on {runs[0]['fit_images']} held-out training images and every score "
              f"certified on the other {runs[0]['certify_images']} (ε = {EPSILON} points, δ = {DELTA}, "
              "Learn-then-Test); *hindsight limit*: the score's most eager threshold whose drop on the test set "
              f"is ≤ {EPSILON} points, chosen with the test labels (not a rule). Runtime "
              f"{time.perf_counter() - t0:.0f} s."]
    write_results("exit_limits", {"command": command(), "machine": machine(), "method": args.method,
                                  "epsilon_points": EPSILON, "delta": DELTA, "runs": runs},
                  markdown(runs, header))


if __name__ == "__main__":
    main()
