"""``adacal`` command line: a thin layer over :mod:`adacal.jobs` and :mod:`adacal.report`.

Subcommands: ``demo``, ``train``, ``convert``, ``evaluate``, ``sweep``, ``report``. A run's settings
are one :class:`adacal.config.JobConfig`: ``--config FILE`` (YAML; packaged examples in
``src/adacal/configs/``, usable by name), then every flag given, each of which sets one key of it
(``--set section.key=value`` sets any key). Unknown or misspelt keys are named with the closest
valid one.

Errors adacal can explain (:class:`~adacal.errors.AdacalError`, file-system errors) end the command
with one line on stderr and exit code 1; ``--verbose`` adds the traceback. Progress is logged to
stderr; results tables go to stdout.
"""
from __future__ import annotations

import argparse
import logging
import random
import shlex
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from adacal.config import JobConfig, load_config, read_yaml
from adacal.distributed import is_main
from adacal.errors import AdacalError, CheckpointError, ConfigError, plain_text
from adacal.recipes import DEFAULT_METHOD

__all__ = ["build_parser", "job_for", "main", "resolve_job"]

PROG = "adacal"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
#: Flags that steer the command itself rather than set a JobConfig key.
_COMMAND_ONLY = ("command", "func", "config", "verbose", "quiet", "out", "snn", "results", "fast", "restart",
                 "resume", "sets", "pipeline_sets", "format", "allow_lossy", "neuron_form")


# --------------------------------------------------------------------------------------- value types
_BadValue = argparse.ArgumentTypeError


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise _BadValue(f"expected an integer, got {v!r}") from None


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise _BadValue(f"expected a number, got {v!r}") from None


def _positive_int(v: str) -> int:
    n = _int(v)
    if n < 1:
        raise _BadValue(f"must be >= 1, got {n}")
    return n


def _items(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise _BadValue("expected a comma-separated list, got nothing")
    return items


def _int_list(value: str) -> list[int]:
    return [_int(v) for v in _items(value)]


def _float_list(value: str) -> list[float]:
    return [_float(v) for v in _items(value)]


def _key_value(value: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as YAML (numbers, booleans, lists)."""
    import yaml

    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise _BadValue(f"expected KEY=VALUE, got {value!r}")
    try:
        parsed = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        parsed = raw
    return key.strip(), parsed


# --------------------------------------------------------------------------------------- parser
_EPILOGS = {
    "demo": """examples:
  adacal demo                        # ~30 s on 2 CPU cores; writes runs/demo/ (summary.json, report.html, *.png)
  adacal demo --fast --out /tmp/d    # seconds: T=2 only, 3 epochs, 128 test images
  adacal demo --timesteps 4,8 --methods plain,burstfire,adafire
""",
    "train": """examples:
  adacal train --model digits_cnn --dataset digits --epochs 20 --out runs/digits
  adacal train --config resnet20_cifar10 --data-dir /data/cifar10 --out runs/r20
writes OUT/model.pt (state_dict) and OUT/train.json; OUT/checkpoint.pt lets an interrupted run resume.
""",
    "convert": """examples:
  adacal convert --model digits_cnn --weights runs/digits/model.pt --dataset digits --timesteps 8 --out runs/snn
  adacal convert --config resnet20_cifar10 --weights zoo/resnet20.pt --method adafire --phi-target 4
  adacal convert ... --set pipeline.calibration.method=percentile     # any JobConfig key
writes the SNN folder OUT (load it with adacal.persist.load_snn, or 'adacal evaluate OUT').
""",
    "evaluate": """examples:
  adacal evaluate runs/snn                    # test metrics and energy at the converted T
  adacal evaluate runs/snn --timesteps 4 --iat --alpha-base 0.6
writes OUT/summary.json (default OUT: SNN/eval); prints the results table.
""",
    "sweep": """examples:
  adacal sweep --model digits_cnn --weights runs/digits/model.pt --dataset digits --timesteps 2,4,8
  adacal sweep --config resnet20_cifar10 --weights zoo/resnet20.pt --methods plain,adafire --no-iat
writes OUT/summary.json, the plots and report.html; rerun the same command to resume an interrupted sweep.
""",
    "export": """examples:
  adacal export runs/snn --format nir                # writes runs/snn/snn.nir
  adacal export runs/snn --format nir --out /tmp/net.nir --allow-lossy
""",
    "report": """examples:
  adacal report runs/sweep                    # redraw plots and report.{md,html} from runs/sweep/summary.json
  adacal report runs/demo/summary.json --out /tmp/report
""",
}

_DESCRIPTIONS = {
    "demo": "Train a tiny CNN on scikit-learn digits, convert it with every method at a few T, report.",
    "train": "Train an ANN on a dataset for its task (SGD, one-cycle schedule).",
    "convert": "Calibrate (and search) a trained ANN into an SNN and save it.",
    "evaluate": "Evaluate a saved SNN at a fixed T or with input-aware adaptive timesteps (--iat).",
    "sweep": "Convert and evaluate an ANN with several methods at several T; write results and a report.",
    "export": "Export a saved SNN as a NIR graph, exactly, or refuse naming every node it cannot represent.",
    "report": "Draw the plots and the report page from a saved summary.json.",
}


def _flag(g: Any, *names: str, key: str, **kw: Any) -> None:
    """A flag whose value sets ``key`` of the JobConfig (only when given: default SUPPRESS)."""
    g.add_argument(*names, dest=key, default=argparse.SUPPRESS, **kw)


def _add_common(p: argparse.ArgumentParser, out_default: str | None) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="YAML file (or a packaged example name) of JobConfig "
                   "sections; flags override it")
    g.add_argument("--set", dest="sets", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="set any JobConfig key (repeatable; dots for sections: pipeline.calibration.method=mse)")
    _flag(g, "--device", key="device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    _flag(g, "--seed", key="seed", metavar="N", type=_int, help="seed for torch/numpy/random and data order "
          "(default: 0)")
    _flag(g, "--threads", key="threads", metavar="N", type=_positive_int, help="CPU threads for torch")
    g.add_argument("--out", metavar="DIR", help=f"output folder (default: {out_default})" if out_default
                   else "output folder")
    v = g.add_mutually_exclusive_group()
    v.add_argument("-v", "--verbose", action="store_true", help="log every library stage and show tracebacks")
    v.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")


def _add_model(p: argparse.ArgumentParser, *, weights_help: str) -> None:
    g = p.add_argument_group("model")
    _flag(g, "--model", key="model.name", help="built-in name (digits_cnn, resnet20, resnet20_wide, vgg16_cifar), "
          "a torchvision name, or package.module:factory")
    _flag(g, "--weights", key="model.weights", metavar="FILE", help=weights_help)
    _flag(g, "--num-classes", key="model.num_classes", metavar="N", type=_positive_int,
          help="classes the model outputs (default: the dataset's)")
    _flag(g, "--task", key="task", help="the task (default: the dataset's own, e.g. classification)")


def _add_data(p: argparse.ArgumentParser, *, test: bool = True) -> None:
    g = p.add_argument_group("data")
    _flag(g, "--dataset", key="data.dataset", help="a registered dataset: cifar10, cifar100, mnist, imagenet, "
          "digits (bundled, no download), ...")
    _flag(g, "--data-dir", key="data.data_dir", metavar="DIR", help="dataset folder (npz or official layout)")
    _flag(g, "--batch-size", key="data.batch_size", metavar="N", type=_positive_int, help="batch size")
    _flag(g, "--calib-size", key="data.calib_size", metavar="N", type=_positive_int,
          help="training samples used for calibration")
    if test:
        _flag(g, "--test-size", key="data.test_size", metavar="N", type=_positive_int,
              help="evaluate on a seeded random (class-stratified) subset of N test samples")
    _flag(g, "--workers", key="data.num_workers", metavar="N", type=_int, help="data loader worker processes")


def _add_pipeline(g: Any) -> None:
    _flag(g, "--phi-target", key="pipeline.phi_target", metavar="N", type=_positive_int,
          help="target φ (max spikes per step) of burst methods (default 4)")
    g.add_argument("--pipeline", dest="pipeline_sets", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a PipelineConfig option, same as --set pipeline.KEY=VALUE")


def _add_iat(g: Any, section: str, *, flag_help: str) -> None:
    _flag(g, "--iat", key=f"{section}.iat", action=argparse.BooleanOptionalAction, help=flag_help)
    _flag(g, "--exit-rule", key=f"{section}.exit_rule", choices=("auto", "risk", "eq15"),
          help="early-exit rule: risk (default: certified accuracy drop ≤ --exit-epsilon against full T) or "
               "eq15 (the paper's α schedule)")
    _flag(g, "--exit-epsilon", key=f"{section}.exit_epsilon", metavar="POINTS", type=_float,
          help="tolerated accuracy drop of the risk rule against full T, in points (default 0.3)")
    _flag(g, "--alpha-base", key=f"{section}.alpha_base", metavar="A", type=_float,
          help="IAT α_base of eq. 15 (default 0.6; ImageNet: 0.995)")
    _flag(g, "--iat-curve", key=f"{section}.iat_curve", type=_float_list, metavar="A,B,...",
          help="α_base values for the accuracy-versus-latency curve (largest T only)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (a new one per call: no state is shared between invocations)."""
    from adacal import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert trained ReLU ANNs into spiking networks with Adaptive Calibration.",
        epilog="start here:  adacal demo   (offline, < 1 min on 2 CPU cores; writes runs/demo/report.html)\n"
               "help on a command:  adacal COMMAND --help")
    parser.add_argument("--version", action="version", version=f"adacal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, out_default: str | None, func: Callable[..., int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=_DESCRIPTIONS[name], description=_DESCRIPTIONS[name], epilog=_EPILOGS[name],
                           allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, out_default)
        p.set_defaults(func=func)
        return p

    p = command("demo", "runs/demo", _cmd_demo)
    p.add_argument("--fast", action="store_true", help="a seconds-long run (T=2, 3 epochs, 128 test images)")
    _flag(p, "--timesteps", key="sweep.timesteps", type=_int_list, metavar="T,T,...",
          help="timesteps to simulate (default 2,4,8)")
    _flag(p, "--methods", key="sweep.methods", type=_items, metavar="M,M,...", help="conversion methods, or all")
    _flag(p, "--epochs", key="train.epochs", metavar="N", type=_positive_int, help="ANN training epochs (default 8)")
    _flag(p, "--test-size", key="data.test_size", metavar="N", type=_positive_int,
          help="evaluate on a seeded random subset of N test digits")
    _add_pipeline(p)
    _add_iat(p, "sweep", flag_help=f"also run {DEFAULT_METHOD} with adaptive timesteps (default on)")
    _flag(p, "--report", key="report", action=argparse.BooleanOptionalAction,
          help="write plots and report.{md,html} (default on)")

    p = command("train", "runs/train", _cmd_train)
    _add_model(p, weights_help="initial weights to start from (optional)")
    _add_data(p, test=False)
    g = p.add_argument_group("training")
    _flag(g, "--epochs", key="train.epochs", metavar="N", type=_positive_int, help="epochs (default 30)")
    _flag(g, "--lr", key="train.lr", metavar="LR", type=_float, help="peak learning rate (default 0.05)")
    _flag(g, "--weight-decay", key="train.weight_decay", metavar="WD", type=_float, help="weight decay")
    _flag(g, "--label-smoothing", key="train.label_smoothing", metavar="EPS", type=_float, help="label smoothing")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/checkpoint.pt if present (default on)")

    p = command("convert", "runs/snn", _cmd_convert)
    _add_model(p, weights_help="trained weights: a torch.save'd state_dict (loaded with weights_only=True)")
    _add_data(p, test=False)
    g = p.add_argument_group("conversion")
    _flag(g, "--method", key="pipeline.method", help=f"conversion method (default {DEFAULT_METHOD})")
    _flag(g, "--timesteps", key="pipeline.timesteps", metavar="T", type=_positive_int,
          help="timesteps T the SNN is calibrated for (default 8)")
    _add_pipeline(g)

    p = command("evaluate", "SNN/eval", _cmd_evaluate)
    p.add_argument("snn", metavar="SNN", help="folder written by 'adacal convert'")
    _flag(p, "--timesteps", key="evaluate.timesteps", metavar="T", type=_positive_int,
          help="timesteps to simulate (default: the converted T)")
    _add_iat(p, "evaluate", flag_help="stop each input early with an IAT policy fitted on the calibration data")
    _add_model(p, weights_help="override the ANN weights recorded in SNN/source.json")
    _add_data(p)

    p = command("sweep", "runs/sweep", _cmd_sweep)
    _add_model(p, weights_help="trained weights: a torch.save'd state_dict (loaded with weights_only=True)")
    _add_data(p)
    g = p.add_argument_group("sweep")
    _flag(g, "--methods", key="sweep.methods", type=_items, metavar="M,M,...", help="methods, or all (default)")
    _flag(g, "--timesteps", key="sweep.timesteps", type=_int_list, metavar="T,T,...", help="timesteps (default 2,4,8)")
    _add_pipeline(g)
    _add_iat(g, "sweep", flag_help=f"also run {DEFAULT_METHOD} with adaptive timesteps (default on)")
    _flag(g, "--report", key="report", action=argparse.BooleanOptionalAction, help="write plots and report pages")
    g.add_argument("--restart", action="store_true", help="discard finished runs of an earlier sweep in OUT")

    p = command("export", "SNN/snn.nir", _cmd_export)
    p.add_argument("snn", metavar="RUN_FOLDER", help="folder written by 'adacal convert'")
    p.add_argument("--format", choices=("nir",), default="nir", help="interchange format (default nir)")
    p.add_argument("--allow-lossy", action="store_true",
                   help="write what NIR cannot represent exactly as approximations, recorded in the file")
    p.add_argument("--neuron-form", choices=("exact", "if"), default="exact",
                   help="exact: NIR I/Threshold/Scale primitives (default); if: nir.IF nodes (lossy)")
    _add_model(p, weights_help="override the ANN weights recorded in RUN_FOLDER/source.json")
    _add_data(p, test=False)

    p = command("report", "the results' folder", _cmd_report)
    p.add_argument("results", metavar="RESULTS", help="summary.json, or a folder holding one")
    return parser


# --------------------------------------------------------------------------------------- config
def _packaged(name: str) -> Any:
    return resources.files("adacal") / "configs" / f"{name}.yaml"


def _config_dict(spec: str) -> dict[str, Any]:
    """A ``--config`` value: a YAML path or a packaged example's name."""
    if Path(spec).is_file():
        return read_yaml(spec)
    name = spec[:-5] if spec.endswith(".yaml") else spec
    packaged = _packaged(name)
    if "/" in spec or not packaged.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("adacal") / "configs").iterdir()
                       if p.name.endswith(".yaml"))
        raise ConfigError(f"config file {spec!r} not found; give a YAML path or a packaged example: {names}")
    with resources.as_file(packaged) as path:
        return read_yaml(path)


def _set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def resolve_job(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> JobConfig:
    """The JobConfig a parsed command line stands for: ``base`` < ``--config`` < flags."""
    tree: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()}
    if getattr(args, "config", None):
        for k, v in _config_dict(args.config).items():
            if isinstance(v, dict) and isinstance(tree.get(k), dict):
                tree[k] = {**tree[k], **v}
            else:
                tree[k] = v
    for key, value in vars(args).items():
        if key not in _COMMAND_ONLY:
            _set_key(tree, key, value)
    for key, value in getattr(args, "pipeline_sets", None) or []:
        _set_key(tree, f"pipeline.{key}", value)
    for key, value in getattr(args, "sets", None) or []:
        _set_key(tree, key, value)
    return load_config(JobConfig, tree)


def _base(args: argparse.Namespace) -> dict[str, Any]:
    """``adacal demo`` starts from the packaged demo config unless ``--config`` names another job."""
    return _config_dict("demo") if args.command == "demo" and not getattr(args, "config", None) else {}


def job_for(argv: Sequence[str]) -> JobConfig:
    """The JobConfig a command line resolves to (config file < flags), without running anything."""
    args = build_parser().parse_args(list(argv))
    return resolve_job(args, _base(args))


# --------------------------------------------------------------------------------------- runtime
#: Loggers whose INFO lines are the job-level progress shown by default (``--verbose`` shows all).
_PROGRESS_LOGGERS = ("adacal.jobs", "adacal.training", "adacal.report", "adacal.cli", "adacal.progress")


class _ProgressFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(_PROGRESS_LOGGERS)


def _setup_logging(verbose: bool, quiet: bool) -> Callable[[], None]:
    """Attach a stderr handler to the ``adacal`` logger; returns the function that removes it."""
    logger = logging.getLogger("adacal")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    old_level = logger.level
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger.setLevel(level)
    handler.setLevel(level)
    if not verbose:
        handler.addFilter(_ProgressFilter())
    logger.addHandler(handler)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    return undo


def _check_device(name: str) -> None:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid --device {name!r}: use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked but MPS is not available here; use --device cpu")


def _seed_everything(seed: int) -> None:
    """The CLI's job: seed the global RNGs once (library code takes explicit seeds)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _require_model_and_data(args: argparse.Namespace) -> None:
    """A command that builds a model on a dataset needs both named, by a flag or the config file."""
    given = set(vars(args))
    tree = _config_dict(args.config) if args.config else {}
    for key, flag, hint in (("model.name", "--model", "a built-in, torchvision or package.module:factory model name"),
                            ("data.dataset", "--dataset", "a registered dataset, e.g. cifar10 or digits")):
        section, name = key.split(".")
        if key not in given and name not in (tree.get(section) or {}):
            raise ConfigError(f"{flag} is required: {hint}")


def _print_table(results: Mapping[str, Any]) -> None:
    from adacal.report import format_table

    print(format_table(results))


# --------------------------------------------------------------------------------------- commands
def _cmd_demo(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.jobs import sweep_to_folder

    if args.fast:
        job = replace(job, data=replace(job.data, calib_size=128, test_size=job.data.test_size or 128),
                      train=replace(job.train, epochs=3),
                      sweep=replace(job.sweep, timesteps=(2,), iat_curve=(0.5, 0.9), exit_curve=(1.0, 3.0)))
    out = args.out or "runs/demo"
    results = sweep_to_folder(job, out, kind="demo", command=command, train=True, restart=True)
    _print_table(results)
    print(f"\nresults: {Path(out) / 'summary.json'}"
          + (f"   report: {Path(out) / 'report.html'}" if job.report else ""))
    return 0


def _cmd_train(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.jobs import train_to_folder

    _require_model_and_data(args)
    out = Path(args.out or "runs/train")
    summary = train_to_folder(job, out, resume=args.resume, command=command)
    final = summary.get("final_eval") or {}
    print(f"test {', '.join(f'{k} {v:.4g}' for k, v in final.items() if isinstance(v, float))} after "
          f"{job.train.epochs} epochs ({summary['train_time_s']:.0f} s)")
    print(f"weights: {out / 'model.pt'}   next: adacal convert --model {job.model.name} --weights "
          f"{shlex.quote(str(out / 'model.pt'))} --dataset {job.data.dataset}")
    return 0


def _cmd_convert(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.jobs import convert_ann, ensure_writable_dir, load_ann, load_data, save_converted

    _require_model_and_data(args)
    out = ensure_writable_dir(args.out or "runs/snn")
    data = load_data(job.data, job.task, num_classes=job.model.num_classes)
    ann = load_ann(job.model, data, device=job.device)
    snn, record = convert_ann(ann, data, job.pipeline, workdir=out / "profiles")
    if is_main():  # every rank holds the same SNN; one writes it
        save_converted(snn, record, out, job=job, command=command)
    _print_record(record)
    print(f"\nSNN saved to {out}   next: adacal evaluate {shlex.quote(str(out))}")
    return 0


def _print_record(record: Mapping[str, Any]) -> None:
    from adacal.knobs import KNOBS

    knobs = {k: v for k, v in (record.get("knobs") or {}).items() if v}
    thr = record.get("thresholds") or {}
    names = list(dict.fromkeys([*thr, *(n for v in knobs.values() for n in v)]))
    print(f"{record.get('method')} at T={record.get('timesteps')}: {len(names)} spiking layers")
    if names:
        width = max(len(n) for n in names)
        heads = [KNOBS[k].symbol if k in KNOBS else k for k in knobs]
        print(f"  {'layer'.ljust(width)}  " + "  ".join(f"{h:>5}" for h in heads) + f"  {'θ (mean)':>11}")
        for n in names:
            t = (thr.get(n) or {}).get("mean")
            cells = "  ".join(f"{knobs[k].get(n, '-')!s:>5}" for k in knobs)
            print(f"  {n.ljust(width)}  {cells}  {'-' if t is None else format(t, '.4g'):>11}")


def _saved_job(job: JobConfig, args: argparse.Namespace) -> JobConfig:
    """A saved SNN folder's job: what ``source.json`` recorded, unless flags or ``--config`` say otherwise."""
    from adacal.jobs import read_source

    folder = Path(args.snn)
    source = read_source(folder)
    given = vars(args)
    if source is None and "model.name" not in given:
        raise CheckpointError(f"{str(folder)!r} has no source.json (not written by 'adacal convert'); pass "
                              "--model, --weights and --dataset to say which ANN and data it belongs to")
    if source is not None:  # what the SNN was made from, unless a flag or the config file says otherwise
        base = {"task": source["task"], "model": source["model"], "data": source["data"]}
        if "model.name" in given:
            base["model"] = {}
        if "data.dataset" in given and given["data.dataset"] != source["data"].get("dataset"):
            base["data"] = {}
        job = resolve_job(args, base)
    return job


def _cmd_export(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.export.nir import export_run_folder

    path = export_run_folder(args.snn, _saved_job(job, args), args.out, allow_lossy=args.allow_lossy,
                             neuron_form=args.neuron_form)
    print(f"NIR graph written to {path}")
    return 0


def _cmd_evaluate(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.atomic import atomic_write_json
    from adacal.jobs import ensure_writable_dir, evaluate_saved
    from adacal.results import SUMMARY_FILE

    folder = Path(args.snn)
    job = _saved_job(job, args)
    out = ensure_writable_dir(args.out or folder / "eval")
    results = evaluate_saved(folder, job, command=command)
    if is_main():
        atomic_write_json(out / SUMMARY_FILE, results)
    _print_table(results)
    print(f"\nresults: {out / SUMMARY_FILE}")
    return 0


def _cmd_sweep(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.jobs import sweep_to_folder

    _require_model_and_data(args)
    out = Path(args.out or "runs/sweep")
    results = sweep_to_folder(job, out, restart=args.restart, command=command)
    _print_table(results)
    print(f"\nresults: {out / 'summary.json'}" + (f"   report: {out / 'report.html'}" if job.report else ""))
    return 0


def _cmd_report(job: JobConfig, args: argparse.Namespace, command: str) -> int:
    from adacal.jobs import ensure_writable_dir
    from adacal.report import write_report
    from adacal.results import load_results

    src = Path(args.results)
    results = load_results(src)
    out = ensure_writable_dir(args.out or (src if src.is_dir() else src.parent))
    written = write_report(results, out)
    _print_table(results)
    print()
    for key, path in written.items():
        print(f"{key:24s} {path}")
    return 0


# --------------------------------------------------------------------------------------- main
#: Commands that run on several processes under ``torchrun`` (the others are single-process jobs).
_DISTRIBUTED_COMMANDS = ("convert", "evaluate", "sweep")


def _join_process_group(job: JobConfig, command: str, cleanups: list[Callable[[], None]]) -> JobConfig:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group, take this rank's device, and keep
    the other ranks quiet (rank 0 prints and writes). A no-op for one process."""
    import contextlib
    import os

    from adacal.distributed import init_from_env

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return job
    if command not in _DISTRIBUTED_COMMANDS:
        raise ConfigError(f"'{PROG} {command}' runs in one process; launch it without torchrun (multi-process "
                          f"commands: {', '.join(_DISTRIBUTED_COMMANDS)})")
    device = init_from_env(job.device)
    if device is None:  # the caller initialised the group already
        return job
    import torch.distributed as dist

    cleanups.append(dist.destroy_process_group)
    if not is_main():
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        logger = logging.getLogger("adacal")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        stack.callback(logger.setLevel, level)
        from adacal import progress

        stack.enter_context(progress.reporting(None))  # progress bars from rank 0 only
        cleanups.append(stack.close)
    return replace(job, device=str(device))


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, AdacalError):
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        what = exc.strerror or " ".join(str(exc).split())
        return f"file system error at{where}: {what}; check the path and permissions, or choose another --out folder"
    return " ".join(plain_text(str(exc)).split()) or type(exc).__name__


def _show_progress(quiet: bool, cleanups: list[Callable[[], None]]) -> None:
    """Progress of long work (:mod:`adacal.progress`): a bar on an interactive stderr (log lines are
    routed around it), log lines every 30 s otherwise, nothing with ``--quiet``."""
    import contextlib

    from adacal import progress

    if quiet:
        return
    stack = contextlib.ExitStack()
    reporter = stack.enter_context(progress.reporting(progress.console(sys.stderr)))
    if isinstance(reporter, progress.TqdmReporter):
        from tqdm.contrib.logging import logging_redirect_tqdm

        stack.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger("adacal")]))
    cleanups.append(stack.close)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``adacal`` command line; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted).

    Every error ends in one line on stderr: adacal's own errors (:class:`~adacal.errors.AdacalError`)
    and file-system errors say what to fix; anything else is reported as an unexpected error (a
    bug, here or in user code adacal called) with its type and first line. ``--verbose`` adds the
    traceback.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    undo_logging = _setup_logging(bool(args.verbose), bool(args.quiet))
    cleanups: list[Callable[[], None]] = [undo_logging]
    log = logging.getLogger("adacal.cli")
    try:
        _show_progress(bool(args.quiet), cleanups)
        job = resolve_job(args, _base(args))
        _check_device(job.device)
        job = _join_process_group(job, args.command, cleanups)
        _seed_everything(job.seed)
        if job.threads:
            import torch

            old_threads = torch.get_num_threads()
            torch.set_num_threads(job.threads)
            cleanups.append(lambda: torch.set_num_threads(old_threads))
        command = " ".join([PROG, *map(shlex.quote, args_list)])
        log.debug("job: %s", job)
        return int(args.func(job, args, command))
    except (AdacalError, OSError) as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG} {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last resort: never a raw traceback (known failures are validated at their root)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG} {args.command}: error: unexpected {type(exc).__name__}: {_error_line(exc)[:300]} — a bug in "
              "adacal or in code it called; rerun with --verbose for the traceback and report it", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for undo in reversed(cleanups):
            undo()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
