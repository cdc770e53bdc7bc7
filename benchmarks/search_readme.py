"""README blocks of the CIFAR-10 grid, the searches' checks and the certified early exit (issue 16).

Used by ``readme_results.py``; every number comes from a result file in ``benchmarks/results/``:

* ``cifar10_methods_current.json`` — the library's sweep with today's defaults (held-out checks,
  certified exit), ``cifar10_methods_previous.json`` — the same sweep with the defaults before
  them, ``cifar10_methods.json`` — the grid of 2025 written by the benchmark's own loop (cells
  taken from it are marked †; ``cifar10_reproduction.md`` compares it with the sweep);
* ``diagnostics_cifar10_resnet20.json``, ``iat_tradeoff.json``, ``ablations_search.json``.
"""
from __future__ import annotations

import json
from typing import Any

from _common import RESULTS

BEGIN, END = "<!-- search:begin -->", "<!-- search:end -->"
PLAIN = ("plain", "calibration", "burstfire")
SEARCHED = ("adafire", "adafire+ssc")


def load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _records(name: str) -> list[dict[str, Any]]:
    r = load(name)
    if r is None:
        return []
    if "records" in r:  # the 2025 grid: its own format
        return [{**x, "iat": bool(x.get("iat")), "source": "2025"} for x in r["records"]]
    from cifar10_methods import records

    return [{**x, "source": name.rsplit("_", 1)[-1]} for x in records(r)]


def grid() -> dict[str, dict[int, dict[str, Any]]]:
    """``{row: {T: record}}``: methods without a search once (their settings did not change), the
    searched methods and the IAT run with the previous and the current defaults."""
    old, prev = _records("cifar10_methods"), _records("cifar10_methods_previous")
    cur = _records("cifar10_methods_current")
    rows: dict[str, dict[int, dict[str, Any]]] = {}

    def first(method: str, T: int, *sources: list[dict[str, Any]]) -> dict[str, Any] | None:
        for src in sources:
            x = next((x for x in src if x["method"] == method and x["T"] == T), None)
            if x is not None:
                return x
        return None

    Ts = sorted({x["T"] for x in old + prev + cur})
    for T in Ts:
        for m in PLAIN:
            x = first(m, T, cur, prev, old)
            if x:
                rows.setdefault(m, {})[T] = x
        for m in SEARCHED:
            for label, srcs in (("previous defaults", (prev, old)), ("current defaults", (cur,))):
                x = first(m, T, *srcs)
                if x:
                    rows.setdefault(f"{m}, {label}", {})[T] = x
        x = first("adafire+ssc+iat", T, prev, old)
        if x:
            rows.setdefault("adafire+ssc + IAT, eq. 15 α_base 0.6 (previous)", {})[T] = x
        x = first("adafire+ssc+iat", T, cur)
        if x:
            rows.setdefault("adafire+ssc + IAT, certified ε = 0.3 pt (current)", {})[T] = x
    return rows


def current_view() -> list[dict[str, Any]]:
    """One record per (method, T) as the library now stands: current defaults where run, else previous."""
    g = grid()
    names = {m: [m] for m in PLAIN}
    names.update({"adafire": ["adafire, current defaults", "adafire, previous defaults"],
                  "adafire+ssc": ["adafire+ssc, current defaults", "adafire+ssc, previous defaults"],
                  "adafire+ssc+iat": ["adafire+ssc + IAT, certified ε = 0.3 pt (current)",
                                      "adafire+ssc + IAT, eq. 15 α_base 0.6 (previous)"]})
    out = []
    Ts = sorted({T for r in g.values() for T in r})
    for m, rows in names.items():
        for T in Ts:
            x = next((g[r][T] for r in rows if T in g.get(r, {})), None)
            if x is not None:
                out.append({**x, "method": m})
    return out


def grid_section() -> list[str]:
    rows = grid()
    if not rows:
        return ["**CIFAR-10 grid:** not run yet (`benchmarks/cifar10_methods.py`).", ""]
    Ts = sorted({T for r in rows.values() for T in r})
    cur, prev, old = load("cifar10_methods_current"), load("cifar10_methods_previous"), load("cifar10_methods")
    ann = (old or {}).get("ann", {}).get("accuracy")
    out = [f"**CIFAR-10 grid** (zoo ResNet-20, ANN {ann:.2f}%; full test set; 256 calibration training images) — "
           "accuracy % / energy µJ per image (IAT: mean timesteps in brackets). Commands: "
           + "; ".join(f"`{r['command']}`" for r in (cur, prev, old) if r) + ". † from the 2025 grid "
           "(`cifar10_reproduction.md`: the sweep reproduces it to a few test images); – not run. Plain, calibration "
           "and burstfire do not search: their settings are the same under both defaults.", "",
           "| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for name, cells in rows.items():
        line = []
        for T in Ts:
            x = cells.get(T)
            if x is None:
                line.append("–")
                continue
            mean = f" ({x['mean_timesteps']:.2f})" if x.get("iat") else ""
            mark = "†" if x["source"] == "2025" else ""
            line.append(f"{x['accuracy']:.2f} / {1e3 * x['energy_mj']:.1f}{mean}{mark}")
        out.append(f"| {name} | " + " | ".join(line) + " |")
    return [*out, ""]


def target_rows() -> list[tuple[str, str, bool | None]]:
    """This issue's targets against the measured numbers."""
    rows: list[tuple[str, str, bool | None]] = []
    g = grid()
    burst, ada, ssc = g.get("burstfire", {}), g.get("adafire, current defaults", {}), g.get(
        "adafire+ssc, current defaults", {})
    for T in sorted(ada):
        if T in burst:
            d, e = ada[T]["accuracy"] - burst[T]["accuracy"], ada[T]["energy_mj"] / burst[T]["energy_mj"]
            need = 0.5 if T <= 2 else 0.0
            rows.append((f"adafire ≥ burstfire{' + 0.5 pt' if need else ''} at ≤ 1.0× its energy, T={T} "
                         "(checked search, full test set)", f"{d:+.2f} points at {e:.3f}× energy",
                         d >= need and e <= 1.0))
    for T in sorted(ssc):
        if T >= 4 and T in ada:
            e, d = ssc[T]["energy_mj"] / ada[T]["energy_mj"], ssc[T]["accuracy"] - ada[T]["accuracy"]
            rows.append((f"adafire+ssc ≥ 25% less energy than adafire for ≤ 0.3 points, T={T}",
                         f"{100 * (1 - e):.0f}% less energy, {d:+.2f} points", e <= 0.75 and d >= -0.3))
    r = load("diagnostics_cifar10_resnet20")
    if r and r.get("correlations"):
        c = r["correlations"]
        rows.append((f"search score predicts accuracy: Pearson ≤ −0.8 (T={r['T']}, {len(r['points'])} random φ "
                     "configurations)", f"held-out top-1 disagreement (the check's default) "
                     f"{c['holdout_disagreement']['pearson']:.2f}; held-out KL {c['holdout_kl']['pearson']:.2f}; "
                     f"paper's Σ per-layer KL {c['paper']['pearson']:.2f}",
                     c["holdout_disagreement"]["pearson"] <= -0.8))
    r = load("iat_tradeoff")
    if r and r.get("runs") and "oracle" in r["runs"][0]:
        for run in r["runs"]:
            T = run["T"]
            x = next((x for x in run["risk"] if x["epsilon"] == 0.3 and x["loss"] == "error"), None)
            if x is None or T < 8:
                continue
            goal = 0.35 if T == 8 else 0.25
            frac = x["mean_timesteps"] / T
            measured = (f"drop {x['drop']:+.2f}, {100 * frac:.0f}% of T, {x['vs_oracle']:.2f}× oracle "
                        f"({run['oracle']['mean_timesteps']:.2f} steps)")
            rows.append((f"certified exit ε=0.3 pt ({r['method']}, T={T}): drop ≤ 0.3 on test, "
                         f"≤ {goal:.0%} of T, ≤ 1.7× oracle", measured,
                         x["drop"] <= 0.3 and frac <= goal and x["vs_oracle"] <= 1.7))
    cur = g.get("adafire+ssc + IAT, certified ε = 0.3 pt (current)", {})
    full = g.get("adafire+ssc, current defaults", {})
    for T in sorted(cur):
        if T in full and T > 1:
            d = full[T]["accuracy"] - cur[T]["accuracy"]
            rows.append((f"grid IAT run (adafire+ssc, certified ε=0.3 pt), T={T}: drop ≤ 0.3 on test",
                         f"drop {d:+.2f}, {100 * cur[T]['mean_timesteps'] / T:.0f}% of T", d <= 0.3))
    return rows


def diagnostics_section() -> list[str]:
    r = load("diagnostics_cifar10_resnet20")
    if not r or not r.get("correlations"):
        return []
    from diagnostics import LABELS

    out = [f"**Does the search's score predict accuracy?** (zoo ResNet-20, T={r['T']}, {len(r['points'])} random φ "
           f"configurations, each refit and bias-corrected as the search returns them; test accuracy on "
           f"{r['data']['test_images']} test images; `{r['command']}`; seed Fig. 1: Pearson −0.966):", "",
           "| score | Pearson | Spearman | Kendall |", "|---|---|---|---|"]
    for s, c in r["correlations"].items():
        out.append(f"| {LABELS[s]} | {c['pearson']:.3f} | {c['spearman']:.3f} | {c['kendall']:.3f} |")
    return [*out, ""]


def iat_section() -> list[str]:
    r = load("iat_tradeoff")
    if not r or not r.get("runs") or "oracle" not in r["runs"][0]:
        return []
    out = [f"**Early exit against the oracle** ({r['method']}, full test set, `{r['command']}`; plot "
           "`benchmarks/results/iat_tradeoff.png`; the certified rule is calibrated on held-out training images "
           "with δ = 0.1; drops are against running all T steps):", "",
           "| T | all T steps | oracle: mean T (% of T) | certified ε=0.1 pt | ε=0.3 pt | ε=1 pt | eq. 15 α_base 0.6 |",
           "|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        T, orc = run["T"], run["oracle"]["mean_timesteps"]

        def cell(eps: float, run: dict[str, Any] = run, T: int = T) -> str:
            x = next((x for x in run["risk"] if x["epsilon"] == eps and x["loss"] == "error"), None)
            if x is None:
                return "–"
            return (f"{x['mean_timesteps']:.2f} ({100 * x['mean_timesteps'] / T:.0f}%, {x['vs_oracle']:.1f}× oracle), "
                    f"{x['drop']:+.2f} pt")

        paper = next((x for x in run["eq15"] if x["alpha_base"] == 0.6), None)
        p = f"{paper['mean_timesteps']:.2f}, {paper['drop']:+.2f} pt" if paper else "–"
        out.append(f"| {T} | {run['full_accuracy']:.2f}% | {orc:.2f} ({100 * orc / T:.0f}%) | {cell(0.1)} | "
                   f"{cell(0.3)} | {cell(1.0)} | {p} |")
    return [*out, ""]


def exit_limits_section() -> list[str]:
    r = load("exit_limits")
    if not r or not r.get("runs"):
        return []
    out = [f"**Would a better exit score reach the targets?** (`{r['command']}`, on the outputs recorded above; "
           "each score certified the same way on half of the held-out images, ε = 0.3 pt, δ = 0.1; *limit*: its "
           "best threshold chosen in hindsight with the test labels; the learned score is a probe, not in the "
           "library): % of T used —", "",
           "| T | target | oracle | " + " | ".join(x["score"] for x in r["runs"][0]["rows"]) + " |",
           "|---|---|---|" + "---|" * len(r["runs"][0]["rows"])]
    for run in r["runs"]:
        T = run["T"]
        cells = [f"{100 * x['certified_mean_timesteps'] / T:.0f}% "
                 f"(limit {100 * x['hindsight_mean_timesteps'] / T:.0f}%)" for x in run["rows"]]
        target = "35%" if T <= 8 else "25%"
        out.append(f"| {T} | ≤ {target} | {100 * run['oracle_mean_timesteps'] / T:.0f}% | " + " | ".join(cells) + " |")
    return [*out, ""]


def ablations_section() -> list[str]:
    r = load("ablations_search")
    if not r or not r.get("records"):
        return []
    out = [f"**The held-out check against the test set** ({r['test_images']} random test images, `{r['command']}`; "
           "every configuration the checks measured, rebuilt and tested; energy relative to uniform φ=4 = BurstFire; "
           "all rows in `benchmarks/results/ablations_search.md`):", "",
           "| T | configuration | held-out KL | test accuracy % | test energy vs BurstFire |", "|---|---|---|---|---|"]
    recs = r["records"]
    for T in sorted({x["T"] for x in recs}):
        burst = next((x for x in recs if x["T"] == T and x["variant"].startswith("phi check: uniform φ=4")), None)
        for x in recs:
            if x["T"] != T or not (x.get("kept") or "uniform φ=4" in x["variant"] or "unchecked" in x["variant"]):
                continue
            rel = f"{x['energy_mj'] / burst['energy_mj']:.3f}×" if burst else "–"
            kl = f"{x['holdout_score']:.4g}" if "holdout_score" in x else "–"
            out.append(f"| {T} | {x['variant']} | {kl} | {x['accuracy']:.2f} | {rel} |")
    return [*out, ""]


def section() -> str:
    """The generated part of the README's section on the checks and the certified exit."""
    out = ["Generated by `python benchmarks/readme_results.py` from `benchmarks/results/*.json`.", ""]
    out += diagnostics_section() + ablations_section() + iat_section() + exit_limits_section()
    if len(out) == 2:
        out.append("No result files yet.")
    return "\n".join(out)
