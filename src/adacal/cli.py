"""``adacal`` command line: a thin layer over :mod:`adacal.jobs`, :mod:`adacal.demo` and :mod:`adacal.report`.

Subcommands: ``demo``, ``train``, ``convert``, ``evaluate``, ``sweep``, ``report``. Every one takes
``--config FILE.yaml`` (flags override the file; see ``src/adacal/configs/`` for examples, usable by
name: ``--config resnet20_cifar10``), ``--device``, ``--seed``, ``--out``, ``--verbose``/``--quiet``.

Errors adacal can explain (:class:`~adacal.errors.AdacalError`, unwritable folders) end the command
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
from importlib import resources
from pathlib import Path
from typing import Any

from adacal.errors import AdacalError, CheckpointError, ConfigError

__all__ = ["build_parser", "main", "resolve_options"]

PROG = "adacal"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
_ALL_METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
#: Options that only steer the CLI itself and cannot come from a config file.
_NOT_IN_CONFIG = {"command", "config", "verbose", "quiet", "func"}


# --------------------------------------------------------------------------------------- value types
# Each converter accepts a flag's string or a config file's YAML value and raises
# argparse.ArgumentTypeError with a readable message (argparse shows it as is).
_BadValue = argparse.ArgumentTypeError


def _int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise _BadValue(f"expected an integer, got {v!r}")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise _BadValue(f"expected an integer, got {v!r}") from None


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise _BadValue(f"expected a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise _BadValue(f"expected a number, got {v!r}") from None


def _items(value: Any) -> list[Any]:
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise _BadValue("expected a comma-separated list, got nothing")
    return items


def _int_list(value: Any) -> list[int]:
    """``"2,4,8"``, ``8`` or ``[2, 4, 8]`` -> ``[2, 4, 8]``."""
    return [_int(v) for v in _items(value)]


def _float_list(value: Any) -> list[float]:
    return [_float(v) for v in _items(value)]


def _positive_int(value: Any) -> int:
    v = _int(value)
    if v < 1:
        raise _BadValue(f"must be >= 1, got {v}")
    return v


def _methods(value: Any) -> list[str]:
    names = [str(v) for v in _items(value)]
    if names == ["all"]:
        return list(_ALL_METHODS)
    return names


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


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise _BadValue(f"expected true or false, got {value!r}")


# --------------------------------------------------------------------------------------- parser
_EPILOGS = {
    "demo": """examples:
  adacal demo                        # ~20-30 s on 2 CPU cores; writes runs/demo/
                                     #   (summary.json, report.html, *.png)
  adacal demo --fast --out /tmp/d    # seconds: T=2 only, 3 epochs, 128 test images
  adacal demo --timesteps 4,8 --methods plain,adafire+ssc
""",
    "train": """examples:
  adacal train --model digits_cnn --dataset digits --epochs 20 --out runs/digits
  adacal train --config resnet20_cifar10 --data-dir /data/cifar10 --out runs/r20
writes OUT/model.pt (state_dict) and OUT/train.json; OUT/checkpoint.pt lets an interrupted run resume.
""",
    "convert": """examples:
  adacal convert --model digits_cnn --weights runs/digits/model.pt --dataset digits \
                 --timesteps 8 --out runs/snn
  adacal convert --config resnet20_cifar10 --weights zoo/resnet20.pt --method adafire --phi-target 4
  adacal convert ... --pipeline calibration.method=percentile     # any PipelineConfig option
writes the SNN folder OUT (load it with adacal.persist.load_snn, or 'adacal evaluate OUT').
""",
    "evaluate": """examples:
  adacal evaluate runs/snn                    # test accuracy and energy at the converted T
  adacal evaluate runs/snn --timesteps 4 --iat --alpha-base 0.6
writes OUT/summary.json (default OUT: SNN/eval); prints the results table.
""",
    "sweep": """examples:
  adacal sweep --model digits_cnn --weights runs/digits/model.pt --dataset digits --timesteps 2,4,8
  adacal sweep --config resnet20_cifar10 --weights zoo/resnet20.pt --methods plain,adafire+ssc --no-iat
writes OUT/summary.json (rewritten after every run), the plots and report.html; prints the table.
""",
    "report": """examples:
  adacal report runs/sweep                    # redraw plots and report.{md,html} from runs/sweep/summary.json
  adacal report runs/demo/summary.json --out /tmp/report
""",
}

_DESCRIPTIONS = {
    "demo": "Train a tiny CNN on scikit-learn digits, convert it with every method at a few T, report.",
    "train": "Train an ANN classifier on a dataset (SGD, one-cycle schedule).",
    "convert": "Calibrate (and search) a trained ANN into an SNN and save it.",
    "evaluate": "Evaluate a saved SNN at a fixed T or with input-aware adaptive timesteps (--iat).",
    "sweep": "Convert and evaluate an ANN with several methods at several T; write results and a report.",
    "report": "Draw the plots and the report page from a saved summary.json.",
}


def _add_common(p: argparse.ArgumentParser, out_default: str | None) -> None:
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file (or a packaged example name) of option values; flags override it",
    )
    g.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    g.add_argument(
        "--seed", metavar="N", type=_int, help="seed for torch/numpy/random and data order (default: 0)"
    )
    g.add_argument(
        "--threads",
        metavar="N",
        type=_positive_int,
        help="CPU threads for torch (default: torch's choice; demo: 1, fastest for its tiny network)",
    )
    out_help = f"output folder (default: {out_default})" if out_default else "output folder"
    g.add_argument("--out", metavar="DIR", help=out_help)
    v = g.add_mutually_exclusive_group()
    v.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every library stage (DEBUG) and show full tracebacks on errors",
    )
    v.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")


def _add_model(p: argparse.ArgumentParser, *, weights_help: str) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="built-in name (digits_cnn, resnet20, resnet20_wide, vgg16_cifar), a "
        "torchvision name, or package.module:factory",
    )
    g.add_argument("--weights", metavar="FILE", help=weights_help)
    g.add_argument(
        "--num-classes",
        metavar="N",
        type=_positive_int,
        help="classes the model outputs (default: the dataset's)",
    )


def _add_data(p: argparse.ArgumentParser, *, test: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="cifar10, cifar100, mnist, imagenet or digits (bundled, no download)")
    g.add_argument("--data-dir", metavar="DIR", help="dataset folder (npz layout or torchvision layout)")
    g.add_argument("--batch-size", metavar="N", type=_positive_int, help="batch size")
    g.add_argument(
        "--calib-size", metavar="N", type=_positive_int, help="training samples used for calibration"
    )
    if test:
        g.add_argument(
            "--test-size", metavar="N", type=_positive_int, help="evaluate on the first N test samples only"
        )
    g.add_argument(
        "--workers",
        metavar="N",
        type=_int,
        dest="num_workers",
        help="data loader worker processes (default 0)",
    )


def _add_pipeline(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--phi-target",
        metavar="N",
        type=_positive_int,
        help="target φ (max spikes per step) of burst methods (default 4)",
    )
    p.add_argument(
        "--pipeline",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="extra PipelineConfig option (repeatable; dots for nesting: calibration.method=mse)",
    )


def _add_iat(p: argparse.ArgumentParser, *, flag_help: str) -> None:
    p.add_argument("--iat", action=argparse.BooleanOptionalAction, default=None, help=flag_help)
    p.add_argument(
        "--alpha-base", metavar="A", type=_float, help="IAT α_base of eq. 15 (default 0.6; ImageNet: 0.995)"
    )
    p.add_argument(
        "--iat-curve",
        type=_float_list,
        metavar="A,B,...",
        help="α_base values for the accuracy-versus-latency curve (largest T only)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (a new one per call: no state is shared between invocations)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Convert trained ReLU ANNs into spiking networks with Adaptive Calibration.",
        epilog="start here:  adacal demo   (offline, < 1 min on 2 CPU cores; writes runs/demo/report.html)\n"
        "help on a command:  adacal COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from adacal import __version__

    parser.add_argument("--version", action="version", version=f"adacal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, out_default: str | None) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=_DESCRIPTIONS[name],
            description=_DESCRIPTIONS[name],
            epilog=_EPILOGS[name],
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(p, out_default)
        return p

    p = command("demo", "runs/demo")
    p.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help="a seconds-long run (T=2, 3 epochs, 128 test images), for smoke tests",
    )
    p.add_argument(
        "--timesteps", type=_int_list, metavar="T,T,...", help="timesteps to simulate (default 2,4,8)"
    )
    p.add_argument(
        "--methods",
        type=_methods,
        metavar="M,M,...",
        help=f"conversion methods (default all: {','.join(_ALL_METHODS)})",
    )
    p.add_argument("--epochs", metavar="N", type=_positive_int, help="ANN training epochs (default 8)")
    p.add_argument(
        "--test-size", metavar="N", type=_positive_int, help="evaluate on the first N test digits only"
    )
    p.add_argument(
        "--phi-target", metavar="N", type=_positive_int, help="target φ of burst methods (default 4)"
    )
    _add_iat(p, flag_help="also run adafire+ssc with adaptive timesteps (default on)")
    p.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write plots and report.{md,html} (default on)",
    )
    p.set_defaults(func=_cmd_demo)

    p = command("train", "runs/train")
    _add_model(p, weights_help="initial weights to start from (optional)")
    _add_data(p, test=False)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", metavar="N", type=_positive_int, help="epochs (default 30)")
    g.add_argument("--lr", metavar="LR", type=_float, help="peak learning rate (default 0.05)")
    g.add_argument("--weight-decay", metavar="WD", type=_float, help="weight decay (default 5e-4)")
    g.add_argument("--label-smoothing", metavar="EPS", type=_float, help="label smoothing (default 0)")
    g.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continue from OUT/checkpoint.pt if present (default on)",
    )
    p.set_defaults(func=_cmd_train)

    p = command("convert", "runs/snn")
    _add_model(p, weights_help="trained weights: a torch.save'd state_dict (loaded with weights_only=True)")
    _add_data(p, test=False)
    g = p.add_argument_group("conversion")
    g.add_argument("--method", choices=_ALL_METHODS, help="conversion method (default adafire+ssc)")
    g.add_argument(
        "--timesteps",
        metavar="T",
        type=_positive_int,
        help="timesteps T the SNN is calibrated for (default 8)",
    )
    _add_pipeline(g)
    p.set_defaults(func=_cmd_convert)

    p = command("evaluate", "SNN/eval")
    p.add_argument("snn", metavar="SNN", help="folder written by 'adacal convert'")
    p.add_argument(
        "--timesteps",
        metavar="T",
        type=_positive_int,
        help="timesteps to simulate (default: the converted T)",
    )
    _add_iat(p, flag_help="stop each input early with an IAT policy fitted on the calibration data")
    _add_model(p, weights_help="override the ANN weights recorded in SNN/source.json")
    _add_data(p)
    p.set_defaults(func=_cmd_evaluate)

    p = command("sweep", "runs/sweep")
    _add_model(p, weights_help="trained weights: a torch.save'd state_dict (loaded with weights_only=True)")
    _add_data(p)
    g = p.add_argument_group("sweep")
    g.add_argument(
        "--methods",
        type=_methods,
        metavar="M,M,...",
        help=f"methods, or 'all' (default all: {','.join(_ALL_METHODS)})",
    )
    g.add_argument("--timesteps", type=_int_list, metavar="T,T,...", help="timesteps (default 2,4,8)")
    _add_pipeline(g)
    _add_iat(g, flag_help="also run adafire+ssc with adaptive timesteps (default on)")
    g.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write plots and report.{md,html} (default on)",
    )
    p.set_defaults(func=_cmd_sweep)

    p = command("report", "the results' folder")
    p.add_argument("results", metavar="RESULTS", help="summary.json, or a folder holding one")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export",
        help="Export a saved SNN for neuromorphic hardware tools (NIR), exactly or not at all.",
        description="Export a saved SNN as a NIR graph; refuses (naming every node) what NIR cannot "
        "represent exactly unless --allow-lossy.",
        epilog="examples:\n  adacal export runs/snn --format nir                # writes runs/snn/snn.nir\n"
        "  adacal export runs/snn --format nir --out /tmp/net.nir --allow-lossy\n",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p, "SNN/snn.nir")
    p.add_argument("snn", metavar="RUN_FOLDER", help="folder written by 'adacal convert'")
    p.add_argument("--format", choices=("nir",), help="interchange format (default nir)")
    p.add_argument("--allow-lossy", action="store_true", default=None,
                   help="write what NIR cannot represent exactly as approximations, recorded in the file")
    p.add_argument("--neuron-form", choices=("exact", "if"),
                   help="exact: NIR I/Threshold/Scale primitives (default); if: nir.IF nodes (lossy)")
    p.set_defaults(func=_cmd_export)
    return parser


# --------------------------------------------------------------------------------------- config files
def _packaged_configs() -> list[str]:
    folder = resources.files("adacal") / "configs"
    try:
        return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_config(spec: str) -> dict[str, Any]:
    import yaml

    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        name = spec[:-5] if spec.endswith(".yaml") else spec
        packaged = resources.files("adacal") / "configs" / f"{name}.yaml"
        if "/" in spec or not packaged.is_file():
            raise ConfigError(
                f"config file {spec!r} not found; give a YAML path or a packaged example: "
                f"{_packaged_configs()}"
            )
        text = packaged.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")
        raise ConfigError(f"config file {spec!r} is not valid YAML: {first}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {spec!r} must hold a mapping of option: value, got {type(data).__name__}"
        )
    return data


def _dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config keys a command accepts: each option's dest and long flag name (dashes as underscores)."""
    out: dict[str, argparse.Action] = {}
    for a in parser._actions:
        if a.dest in (argparse.SUPPRESS, "help"):
            continue
        out[a.dest] = a
        for flag in a.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-"):
                out[flag[2:].replace("-", "_")] = a
    return out


def _config_values(
    spec: str,
    command: str,
    subparsers: Mapping[str, argparse.ArgumentParser],
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Values of a config file for ``command``: top-level keys plus the ``command:`` section.

    Keys valid for another command are ignored (one file can serve train, convert and sweep);
    keys valid for none are errors. Values go through the same conversion as the flags; options in
    ``skip`` (given as flags) are not read from the file at all.
    """
    raw = _read_config(spec)
    own = _dests(subparsers[command])
    every = {d for p in subparsers.values() for d in _dests(p)} - _NOT_IN_CONFIG
    merged: dict[str, Any] = {}
    section: dict[str, Any] = {}
    for key, value in raw.items():
        k = str(key).replace("-", "_")
        if k in subparsers:
            if k == command:
                if not isinstance(value, dict):
                    raise ConfigError(f"config section {key!r} in {spec!r} must be a mapping")
                section = {str(a).replace("-", "_"): b for a, b in value.items()}
            continue
        merged[k] = value
    merged.update(section)
    out: dict[str, Any] = {}
    for k, value in merged.items():
        if k == "pipeline":
            if "pipeline" not in own:
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    f"config key 'pipeline' in {spec!r} must be a mapping of PipelineConfig options"
                )
            out[k] = value
            continue
        if k not in own or k in _NOT_IN_CONFIG:
            if k in every:
                continue
            raise ConfigError(
                f"unknown option {k!r} in config file {spec!r}; valid for '{command}': "
                f"{sorted(set(own) - _NOT_IN_CONFIG)}"
            )
        action = own[k]
        k = action.dest
        if k in skip:
            continue
        try:
            if value is None:
                out[k] = None
            elif action.type is not None:
                out[k] = action.type(value)
            elif isinstance(action, argparse.BooleanOptionalAction) or action.const is True:
                out[k] = _bool(value)
            else:
                out[k] = value if not isinstance(value, (int, float)) else str(value)
            if action.choices is not None and out[k] not in action.choices:
                raise _BadValue(f"must be one of {list(action.choices)}")
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"invalid value {value!r} for {k!r} in config file {spec!r}: {exc}") from exc
    return out


def _nest(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``[("calibration.method", "mse")]`` -> ``{"calibration": {"method": "mse"}}``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"pipeline option {key!r} conflicts with a value set for {p!r}")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _resolve(args: argparse.Namespace, subparsers: Mapping[str, argparse.ArgumentParser]) -> dict[str, Any]:
    """Config-file values overridden by every flag given on the command line."""
    given = frozenset(k for k, v in vars(args).items() if v is not None and k != "pipeline")
    opts: dict[str, Any] = _config_values(args.config, args.command, subparsers, given) if args.config else {}
    for k, v in vars(args).items():
        if k == "pipeline":
            if v:
                opts["pipeline"] = _merge(opts.get("pipeline") or {}, _nest(v))
        elif v is not None:
            opts[k] = v
    opts.setdefault("pipeline", {})
    return opts


# --------------------------------------------------------------------------------------- runtime
#: Loggers whose INFO lines are the job-level progress shown by default (``--verbose`` shows all).
_PROGRESS_LOGGERS = ("adacal.jobs", "adacal.demo", "adacal.training", "adacal.report", "adacal.cli")


class _ProgressFilter(logging.Filter):
    """Default verbosity: job-level progress plus every warning, not each library stage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(_PROGRESS_LOGGERS)


def _setup_logging(verbose: bool, quiet: bool) -> Callable[[], None]:
    """Attach a stderr handler to the ``adacal`` logger; returns the function that removes it.

    Default: INFO progress of the jobs (data, training epochs, each run's result) and all
    warnings; ``--verbose``: DEBUG from every module; ``--quiet``: warnings and errors only.
    """
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


def _device(name: str | None) -> Any:
    import torch

    spec = name or "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid --device {spec!r}: use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec} asked but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked but MPS is not available here; use --device cpu")
    return dev


def _seed_everything(seed: int) -> None:
    """The CLI's job: seed the global RNGs once (library code takes explicit seeds)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _pick(opts: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: opts[k] for k in keys if opts.get(k) is not None}


def _require(opts: Mapping[str, Any], key: str, hint: str) -> Any:
    if opts.get(key) is None:
        raise ConfigError(f"--{key.replace('_', '-')} is required: {hint}")
    return opts[key]


def _specs(opts: Mapping[str, Any], *, dataset_default: str | None = None) -> tuple[Any, Any]:
    from adacal.jobs import DataSpec, ModelSpec, spec_from_dict

    data = {
        "dataset": opts.get("dataset") or dataset_default,
        "seed": opts.get("seed", 0),
        **_pick(opts, "data_dir", "batch_size", "calib_size", "test_size", "num_workers"),
    }
    if data["dataset"] is None:
        raise ConfigError("--dataset is required: one of cifar10, cifar100, mnist, imagenet, digits")
    model = {
        "name": _require(opts, "model", "a built-in, torchvision or package.module:factory model name"),
        **_pick(opts, "weights", "num_classes"),
    }
    return spec_from_dict(DataSpec, data), spec_from_dict(ModelSpec, model)


def _print_table(results: Mapping[str, Any]) -> None:
    from adacal.report import format_table

    print(format_table(results))


# --------------------------------------------------------------------------------------- commands
def _cmd_demo(opts: dict[str, Any], command: str) -> int:
    from adacal.demo import DemoConfig, run_demo

    cfg = DemoConfig.fast() if opts.get("fast") else DemoConfig()
    over = _pick(opts, "epochs", "test_size", "phi_target", "iat", "alpha_base", "report")
    if opts.get("timesteps"):
        over["timesteps"] = tuple(opts["timesteps"])
    if opts.get("iat_curve"):
        over["iat_curve"] = tuple(opts["iat_curve"])
    if opts.get("methods"):
        over["methods"] = tuple(opts["methods"])
        if "adafire+ssc" not in over["methods"] and opts.get("iat") is not True:
            over["iat"] = False
    cfg = cfg.with_overrides(**over)
    out = opts.get("out") or "runs/demo"
    results = run_demo(cfg, out, device=opts["device"], seed=opts.get("seed", 0), command=command)
    _print_table(results)
    page = Path(out) / ("report.html" if cfg.report else "summary.json")
    print(f"\nresults: {Path(out) / 'summary.json'}" + (f"   report: {page}" if cfg.report else ""))
    return 0


def _cmd_train(opts: dict[str, Any], command: str) -> int:
    from adacal.jobs import TrainSpec, spec_from_dict, train_to_folder

    data_spec, model_spec = _specs(opts)
    train_spec = spec_from_dict(
        TrainSpec, _pick(opts, "epochs", "lr", "weight_decay", "batch_size", "label_smoothing")
    )
    out = Path(opts.get("out") or "runs/train")
    summary = train_to_folder(
        model_spec,
        data_spec,
        train_spec,
        out,
        device=opts["device"],
        seed=opts["seed"],
        resume=opts.get("resume") is not False,
        command=command,
    )
    print(
        f"test accuracy {summary['final_eval_acc']:.2f}% after {train_spec.epochs} epochs "
        f"({summary['train_time_s']:.0f} s)"
    )
    print(
        f"weights: {out / 'model.pt'}   next: adacal convert --model {model_spec.name} --weights "
        f"{shlex.quote(str(out / 'model.pt'))} --dataset {data_spec.dataset}"
    )
    return 0


def _cmd_convert(opts: dict[str, Any], command: str) -> int:
    from adacal.jobs import convert_ann, ensure_writable_dir, load_ann, load_data, save_converted

    data_spec, model_spec = _specs(opts)
    out = ensure_writable_dir(opts.get("out") or "runs/snn")
    data = load_data(data_spec)
    ann = load_ann(model_spec, data, device=opts["device"])
    snn, record = convert_ann(
        ann,
        data,
        method=opts.get("method") or "adafire+ssc",
        timesteps=opts.get("timesteps") or 8,
        phi_target=opts.get("phi_target") or 4,
        options=opts["pipeline"],
        workdir=out / "profiles",
    )
    save_converted(snn, record, out, model=model_spec, data=data_spec, command=command)
    _print_record(record)
    print(f"\nSNN saved to {out}   next: adacal evaluate {shlex.quote(str(out))}")
    return 0


def _print_record(record: Mapping[str, Any]) -> None:
    phi, rho, thr = record.get("phi") or {}, record.get("rho") or {}, record.get("thresholds") or {}
    names = list(dict.fromkeys([*thr, *phi, *rho]))
    print(f"{record.get('method')} at T={record.get('timesteps')}: {len(names)} spiking layers")
    if names:
        width = max(len(n) for n in names)
        print(f"  {'layer'.ljust(width)}  {'phi':>4}  {'rho':>5}  {'theta(mean)':>11}")
        for n in names:
            t = (thr.get(n) or {}).get("mean")
            print(
                f"  {n.ljust(width)}  {phi.get(n, '-')!s:>4}  {rho.get(n, '-')!s:>5}  "
                f"{'-' if t is None else format(t, '.4g'):>11}"
            )


def _cmd_evaluate(opts: dict[str, Any], command: str) -> int:
    from adacal.jobs import (
        DataSpec,
        ModelSpec,
        ensure_writable_dir,
        evaluate_saved,
        read_source,
        spec_from_dict,
    )
    from adacal.report import SUMMARY_FILE, write_json_atomic

    folder = Path(opts["snn"])
    source = read_source(folder)
    if source is None and not opts.get("model"):
        raise CheckpointError(
            f"{str(folder)!r} has no source.json (not written by 'adacal convert'); pass --model, --weights "
            "and --dataset to say which ANN and data it belongs to"
        )
    model_d, data_d = source or ({}, {})
    if opts.get("model"):  # another model: nothing recorded for the old one applies
        model_d = {"name": opts["model"]}
    model_d.update(_pick(opts, "weights", "num_classes"))
    if opts.get("dataset") and opts["dataset"] != data_d.get("dataset"):
        data_d = {"dataset": opts["dataset"]}
    data_d.update(_pick(opts, "data_dir", "batch_size", "calib_size", "test_size", "num_workers"))
    data_d.setdefault("seed", opts["seed"])
    if "dataset" not in data_d:
        raise ConfigError("--dataset is required: this SNN folder does not record one")
    model_spec, data_spec = spec_from_dict(ModelSpec, model_d), spec_from_dict(DataSpec, data_d)
    out = ensure_writable_dir(opts.get("out") or folder / "eval")
    results = evaluate_saved(
        folder,
        model=model_spec,
        data=data_spec,
        timesteps=opts.get("timesteps"),
        iat=bool(opts.get("iat")),
        alpha_base=opts.get("alpha_base", 0.6),
        curve_alphas=opts.get("iat_curve") or (),
        device=opts["device"],
        command=command,
    )
    write_json_atomic(results, out / SUMMARY_FILE)
    _print_table(results)
    print(f"\nresults: {out / SUMMARY_FILE}")
    return 0


def _cmd_sweep(opts: dict[str, Any], command: str) -> int:
    from adacal.jobs import SweepConfig, spec_from_dict, sweep_to_folder

    data_spec, model_spec = _specs(opts)
    sweep_d: dict[str, Any] = _pick(
        opts, "phi_target", "alpha_base", "iat", "methods", "timesteps", "iat_curve"
    )
    sweep_d["pipeline"] = opts["pipeline"]
    if "methods" in sweep_d and "adafire+ssc" not in sweep_d["methods"] and "iat" not in sweep_d:
        sweep_d["iat"] = False  # the default IAT method is not swept
    sweep = spec_from_dict(SweepConfig, sweep_d)
    out = Path(opts.get("out") or "runs/sweep")
    report = opts.get("report") is not False
    results = sweep_to_folder(
        model_spec,
        data_spec,
        sweep,
        out,
        device=opts["device"],
        seed=opts["seed"],
        report=report,
        command=command,
    )
    _print_table(results)
    print(f"\nresults: {out / 'summary.json'}" + (f"   report: {out / 'report.html'}" if report else ""))
    return 0


def _cmd_report(opts: dict[str, Any], command: str) -> int:
    from adacal.jobs import ensure_writable_dir
    from adacal.report import load_results, write_report

    src = Path(opts["results"])
    results = load_results(src)
    out = ensure_writable_dir(opts.get("out") or (src if src.is_dir() else src.parent))
    written = write_report(results, out)
    _print_table(results)
    print()
    for key, path in written.items():
        print(f"{key:24s} {path}")
    return 0


def _cmd_export(opts: dict[str, Any], command: str) -> int:
    from adacal.export.nir import export_run_folder

    path = export_run_folder(
        opts["snn"],
        opts.get("out"),
        allow_lossy=bool(opts.get("allow_lossy")),
        neuron_form=opts.get("neuron_form") or "exact",
        device=opts["device"],
    )
    print(f"NIR graph written to {path}")
    return 0


# --------------------------------------------------------------------------------------- main
def _error_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, AdacalError):
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        what = exc.strerror or " ".join(str(exc).split())
        return (
            f"file system error at{where}: {what}; check the path and permissions, "
            "or choose another --out folder"
        )
    return " ".join(str(exc).split()) or type(exc).__name__


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    subparsers = {
        name: p
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name, p in a.choices.items()
    }
    return args, subparsers


def resolve_options(argv: Sequence[str]) -> dict[str, Any]:
    """The options a command line resolves to (config file < flags), without running anything.

    Raises :class:`ConfigError` for a bad config file; argparse exits on bad flags.
    """
    args, subparsers = _parse(argv)
    return _resolve(args, subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``adacal`` command line; returns the exit code (0 ok, 1 error, 130 interrupted)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args, subparsers = _parse(args_list)
    undo_logging = _setup_logging(bool(args.verbose), bool(args.quiet))
    cleanups: list[Callable[[], None]] = [undo_logging]
    log = logging.getLogger("adacal.cli")
    try:
        opts = _resolve(args, subparsers)
        opts["device"] = _device(opts.get("device"))
        opts["seed"] = int(opts.get("seed") if opts.get("seed") is not None else 0)
        _seed_everything(opts["seed"])
        threads = opts.get("threads") or (1 if args.command == "demo" else None)
        if threads:
            import torch

            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
            cleanups.append(lambda: torch.set_num_threads(old_threads))
        command = " ".join([PROG, *map(shlex.quote, args_list)])
        log.debug("options: %s", opts)
        return int(args.func(opts, command))
    except (AdacalError, OSError) as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG} {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for undo in reversed(cleanups):
            undo()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
