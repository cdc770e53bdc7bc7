"""The report page: ``report.md`` (renders on GitHub) and ``report.html`` (open in a browser).

Both are rendered from the same list of blocks, so they always show the same content: the
results table, the plots written by :func:`adacal.report.write_report`, the per-layer settings
of the featured run, the IAT policy, the job's settings and timings.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adacal.atomic import atomic_write_text
from adacal.report import featured_run, format_table
from adacal.results import headline, run_value, summary_rows

__all__ = ["Block", "page_blocks", "render_html", "render_markdown", "write_pages"]

_PLOT_TEXT: dict[str, tuple[str, str]] = {
    "metric_vs_timesteps": (
        "Quality versus timesteps",
        "Each method converted and simulated at every T; "
        "IAT runs sit at the mean number of timesteps they used.",
    ),
    "metric_vs_energy": ("Quality versus energy",
                         "Energy per sample relative to the ANN (100 % = the ANN's MAC energy).",),
    "layer_settings": ("Searched per-layer settings",
                       "One panel per searched knob (e.g. φ: spikes a neuron may fire per step; ρ: threshold ratio).",),
    "layer_energy": (
        "Energy per layer",
        "ANN: every MAC; SNN: MACs of layers fed with analog input plus one "
        "accumulate per spike and synapse it drives.",
    ),
    "iat_exit_histogram": ("IAT exit histogram", "The timestep at which each test input stopped."),
    "iat_curve": (
        "IAT accuracy versus latency",
        "Early exit at several α_base (eq. 15) or tolerated drops ε (risk rule) against running every input "
        "a fixed number of steps.",
    ),
}


@dataclass(frozen=True)
class Block:
    """One element of the page: ``kind`` is h1 | h2 | p | table | img | pre."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _fmt(v: Any, spec: str = ".4g") -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, (int, float)):
        return format(v, spec) if math.isfinite(float(v)) else str(v)
    return str(v)


def _table_block(table_md: str) -> Block:
    lines = table_md.splitlines()
    split = lambda line: tuple(c.strip() for c in line.strip().strip("|").split("|"))  # noqa: E731
    return Block("table", headers=split(lines[0]), rows=tuple(split(line) for line in lines[2:]))


def _layer_block(run: Mapping[str, Any]) -> Block | None:
    """Per spiking layer (neuron): every knob's value, mean threshold, firing rate, spikes and SOPs."""
    from adacal.knobs import KNOBS

    conv = run.get("conversion") or {}
    knobs = {k: v for k, v in (conv.get("knobs") or {}).items() if v}
    thr = conv.get("thresholds") or {}
    neurons = {str(n.get("name")): n for n in run.get("neurons") or []}
    names = list(dict.fromkeys([*thr, *(n for v in knobs.values() for n in v), *neurons]))
    if not names:
        return None
    rows = []
    for n in names:
        t, act = thr.get(n) or {}, neurons.get(n) or {}
        rows.append((n, *(_fmt(v.get(n)) for v in knobs.values()), _fmt(t.get("mean")),
                     _fmt(act.get("firing_rate"), ".3f"), _fmt(act.get("spikes"), ".4g"), _fmt(act.get("sops"), ".4g")))
    symbols = tuple(KNOBS[k].symbol if k in KNOBS else k for k in knobs)
    return Block("table", headers=("spiking layer", *symbols, "θ (mean)", "firing rate", "spikes/sample",
                                   "SOPs/sample triggered"), rows=tuple(rows))


def page_blocks(results: Mapping[str, Any], plots: Mapping[str, Path], folder: Path,
                captions: Mapping[str, str] | None = None) -> list[Block]:
    """The page as a list of blocks (image paths relative to ``folder``); ``captions`` of task pictures."""
    key, label = headline(results)
    model = results.get("model") or {}
    env = results.get("environment") or {}
    runs = list(results.get("runs") or [])
    title = (
        f"adacal {results.get('kind', 'results')}: {model.get('name', '?')} on {model.get('dataset', '?')}"
    )
    blocks = [Block("h1", title)]
    facts = [f"created {results.get('created', '?')}", f"adacal {results.get('adacal_version', '?')}",
             f"device {env.get('device', '?')}", f"{len(runs)} runs"]
    if results.get("command"):
        facts.append(f"command `{results['command']}`")
    blocks.append(Block("p", " · ".join(facts)))
    if summary_rows(results):
        blocks += [Block("h2", "Results"), _table_block(format_table(results, markdown=True))]
        costs = next((r["energy_costs"] for r in runs if isinstance(r.get("energy_costs"), dict)), None)
        cost_text = (
            (
                f"{costs.get('name', 'custom')} costs (MAC {_fmt(costs.get('e_mac_pj'))} pJ, AC "
                f"{_fmt(costs.get('e_ac_pj'))} pJ)"
            )
            if costs
            else "the energy model's costs"
        )
        blocks.append(
            Block(
                "p",
                f"{label}: on the test split. Energy: per sample, {cost_text}. Mean T: "
                "timesteps actually run per input (below T only with IAT).",
            )
        )

    def img(name: str) -> None:
        if name in plots:
            head, text = _PLOT_TEXT.get(name, (name.replace("_", " "), (captions or {}).get(name, "")))
            if name.startswith("pareto_"):
                head, text = f"{name[7:]} search frontier", ("Every point is a Pareto-optimal assignment to the "
                                                            "layers; the star is the one chosen under the budget.")
            rel = os.path.relpath(plots[name], folder)
            blocks.extend([Block("h2", head), Block("img", rel), Block("p", text)])

    img("metric_vs_timesteps")
    img("metric_vs_energy")
    feat = featured_run(runs) or featured_run(runs, iat=True)
    if feat is not None:
        blocks.append(Block("h2", f"Details of {feat['name']}"))
        lb = _layer_block(feat)
        if lb is not None:
            blocks.append(lb)
        for name in ("layer_settings", *sorted(k for k in plots if k.startswith("pareto_")), "layer_energy"):
            img(name)
    iat = featured_run(runs, iat=True)
    if iat is not None:
        blocks.append(Block("h2", f"Input-aware adaptive timesteps ({iat['name']})"))
        blocks.append(
            Block(
                "p",
                f"{label} {_fmt(run_value(iat, key), '.2f')} at "
                f"{_fmt(iat.get('mean_timesteps'), '.2f')} mean timesteps (max {iat['timesteps']}).",
            )
        )
        policy = iat.get("iat_policy") or {}
        cert = policy.get("certificate")
        if policy.get("thresholds"):
            how = (f"α_base {_fmt(policy.get('alpha_base'))}" if not cert else
                   f"{policy.get('score')} score; certified drop ≤ {_fmt(100 * cert['epsilon'], '.2g')} points "
                   f"against all T steps with confidence {_fmt(1 - cert['delta'], '.2g')} on {cert['n']} held-out "
                   f"training inputs" + ("" if cert.get("certified") else " — nothing certified: no early exit"))
            blocks.append(
                Block("p",
                      "exit thresholds α_t: " + ", ".join(_fmt(v, ".3f") for v in policy["thresholds"]) + f" ({how})")
            )
        img("iat_exit_histogram")
        img("iat_curve")
    for name in plots:  # the task's own pictures
        if name in (captions or {}):
            img(name)
    if results.get("training"):
        tr = results["training"]
        final = tr.get("final_eval") or {}
        blocks += [
            Block("h2", "ANN training"),
            Block("p", f"{_fmt(tr.get('epochs'))} epochs in {_fmt(tr.get('train_time_s'), '.1f')} s, test "
                       + ", ".join(f"{k} {_fmt(v, '.4g')}" for k, v in final.items() if isinstance(v, float))),
        ]
    if results.get("settings"):
        blocks += [Block("h2", "Settings"), Block("pre", json.dumps(results["settings"], indent=2))]
    timing = results.get("timing") or {}
    if timing:
        blocks += [Block("h2", "Timing"), Block("p", ", ".join(f"{k} {_fmt(v, '.1f')} s" for k, v in timing.items()))]
    blocks.append(Block("p", "Schema of summary.json: docs/results_schema.md in the adacal repository."))
    return blocks


def render_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "img":
            out.append(f"![{Path(b.text).stem}]({b.text})")
        elif b.kind == "pre":
            out.append(f"```\n{b.text}\n```")
        elif b.kind == "table":
            esc = lambda c: c.replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(map(esc, b.headers)) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(b.headers) - 1)) + "|")
            out.extend("| " + " | ".join(map(esc, r)) + " |" for r in b.rows)
        out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:3px 8px}
td{text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto}
code{background:#f3f3f3}"""


def render_html(blocks: Sequence[Block]) -> str:
    """A self-contained HTML page (images by relative path)."""
    e = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "adacal report")
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts = e(b.text).split("`")
            body.append("<p>" + "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)) + "</p>")
        elif b.kind == "img":
            body.append(f'<p><img src="{e(b.text)}" alt="{e(Path(b.text).stem)}"></p>')
        elif b.kind == "pre":
            body.append(f"<pre>{e(b.text)}</pre>")
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_pages(results: Mapping[str, Any], plots: Mapping[str, Path], folder: str | os.PathLike[str],
                captions: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``folder`` atomically; returns their paths."""
    out = Path(folder)
    blocks = page_blocks(results, plots, out, captions)
    return {"report_md": atomic_write_text(out / "report.md", render_markdown(blocks)),
            "report_html": atomic_write_text(out / "report.html", render_html(blocks))}
