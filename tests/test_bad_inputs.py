"""A catalogue of bad inputs, through the Python API and the command line, each with its error.

Every API case asserts the :class:`~adacal.errors.AdacalError` subclass and a message fragment; every
CLI case asserts the exit code (1 for errors, 2 for usage), that stderr holds exactly one line
``adacal CMD: error: ...`` with no traceback, the message fragment, and the class of the exception
that reached ``main`` (recorded by wrapping ``cli._error_line``). One subprocess case checks the
same of a real process. Tiny models and the bundled digits keep it to seconds.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import adacal as ac
from adacal import cli
from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig, JobConfig, NeuronConfig, PipelineConfig, load_config
from adacal.convert import prepare
from adacal.errors import (
    AdacalError,
    CalibrationError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelError,
    ShapeError,
)
from adacal.models import build_model, load_state_dict_file

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------ fixtures
class Net(nn.Module):
    """conv-ReLU-linear on [B, 3, 8, 8] (5 classes); ``bias=False`` lets all-zero data silence the layer."""

    def __init__(self, bias: bool = True, first: nn.Module | None = None) -> None:
        super().__init__()
        self.first = first or nn.Identity()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(self.first(x))).flatten(1))


def _x(batch: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def snn() -> ac.SpikingModel:
    torch.manual_seed(0)
    return prepare(Net().eval(), _x())


FACTORIES = """
import torch.nn as nn
def boom(num_classes=10):
    raise ValueError("factory exploded")
def not_a_model(num_classes=10):
    return 42
"""


@dataclass
class Files:
    root: Path
    weights: Path  # random digits_cnn state_dict
    snn: Path  # a folder written by 'adacal convert'

    def copy_snn(self, name: str) -> Path:
        dst = self.root / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.snn, dst)
        return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10)
    weights = root / "weights.pt"
    torch.save(model.state_dict(), weights)
    torch.save(build_model("digits_cnn", 5).state_dict(), root / "five.pt")
    torch.save(model, root / "pickled_model.pt")  # the whole module, not its state_dict
    nan = {k: v.clone() for k, v in model.state_dict().items()}
    nan["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan, root / "nan.pt")
    huge = {k: v * 1e30 if k.endswith("weight") and v.dim() > 1 else v for k, v in model.state_dict().items()}
    torch.save(huge, root / "huge.pt")
    (root / "text.pt").write_text("not a torch file\n")
    (root / "a_folder").mkdir()
    (root / "bad_factories.py").write_text(FACTORIES)
    (root / "bad.yaml").write_text("sweep: {timesteps: [2\n")
    labels = root / "labels"
    labels.mkdir()  # digits.npz whose labels run past the 10 classes
    rng = np.random.default_rng(0)
    np.savez(labels / "digits.npz", images=rng.integers(0, 17, (200, 8, 8), dtype=np.uint8),
             labels=np.arange(200) % 12)
    snn_dir = root / "snn"
    code = cli.main(["convert", "--model", "digits_cnn", "--dataset", "digits", "--weights", str(weights),
                     "--method", "plain", "--timesteps", "1", "--calib-size", "32", "--out", str(snn_dir), "--quiet"])
    assert code == 0
    return Files(root, weights, snn_dir)


@pytest.fixture(autouse=True)
def _factories_importable(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(files.root))


# ------------------------------------------------------------------------------------------ API cases
def _record(folder: Path, value: Any) -> Path:
    (folder / "record.json").write_text(json.dumps(value))
    return folder


def _save_snn_onto_a_file(snn: ac.SpikingModel, f: Files) -> None:
    target = f.root / "plain_file"
    target.write_text("x")
    ac.save_snn(snn, {}, target)


def _load_snn(f: Files, record: Any) -> None:
    folder = f.root / "api_snn"
    folder.mkdir(exist_ok=True)
    ac.save_snn(prepare(Net().eval(), _x()), {"method": "plain"}, folder)
    _record(folder, record)
    ac.load_snn(Net().eval(), folder, _x())


def _overflowing_model() -> nn.Module:
    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.mul_(1e38)
        net.fc.weight.mul_(1e38)
    return net


def _nan_weights() -> nn.Module:
    net = Net().eval()
    with torch.no_grad():
        net.conv.weight[0, 0, 0, 0] = float("nan")
    return net


API_CASES: list[tuple[str, Callable[[ac.SpikingModel, Files], Any], type[AdacalError], str]] = [
    ("T as a string", lambda s, f: s.run(_x(), "4"), ConfigError, "timesteps (T) must be an integer >= 1, got '4'"),
    ("T None", lambda s, f: s.run(_x(), None), ConfigError, "got None"),
    ("T NaN", lambda s, f: calibrate_thresholds(s, _x(), timesteps=math.nan), ConfigError, "got nan"),
    ("T 2.5 in evaluate", lambda s, f: ac.evaluate(s, [(_x(), torch.zeros(4).long())], timesteps=2.5),
     ConfigError, "got 2.5"),
    ("calibration data of another size", lambda s, f: calibrate_thresholds(s, _x(size=16), timesteps=4),
     ShapeError, "per-sample shape [3, 16, 16] (conversion saw [3, 8, 8])"),
    ("correction data of another size", lambda s, f: correct_bias(s, _x(size=16), timesteps=4),
     ShapeError, "per-sample shape [3, 16, 16]"),
    ("run on another size", lambda s, f: s.run(_x(size=12), 2), ShapeError, "conversion saw [3, 8, 8]"),
    ("run on another channel count", lambda s, f: s.run(torch.randn(2, 1, 8, 8), 2), ShapeError,
     "does not match the model"),
    ("integer input to run", lambda s, f: s.run(torch.randint(0, 255, (2, 3, 8, 8)), 2), DataError,
     "dtype int64 differs from the float32"),
    ("float64 input to run", lambda s, f: s.run(_x().double(), 2), DataError, "dtype float64"),
    ("integer calibration data", lambda s, f: calibrate_thresholds(s, torch.randint(0, 9, (2, 3, 8, 8)), timesteps=2),
     DataError, "dtype int64 (conversion saw float32)"),
    ("save_snn onto a file", _save_snn_onto_a_file, CheckpointError, "it is a file"),
    ("model on the meta device", lambda s, f: prepare(Net().to("meta"), _x()), ModelError, "meta device"),
    ("input on the meta device", lambda s, f: prepare(Net(), _x().to("meta")), DataError, "meta device"),
    ("unknown PipelineConfig keyword", lambda s, f: PipelineConfig(timestep=4), ConfigError,
     "PipelineConfig has no option 'timestep'; did you mean 'timesteps'?"),
    ("unknown CalibrationConfig keyword", lambda s, f: CalibrationConfig(methd="mse"), ConfigError,
     "did you mean 'method'?"),
    ("phi 0", lambda s, f: NeuronConfig(phi=0), ConfigError, "phi (max spikes per timestep) must be an integer >= 1"),
    ("a scalar where a section is expected", lambda s, f: load_config(JobConfig, {"pipeline": 3}), ConfigError,
     "pipeline must be a section"),
    ("all-zero calibration data", lambda s, f: calibrate_thresholds(prepare(Net(bias=False).eval(), _x()),
                                                                     torch.zeros(8, 3, 8, 8), timesteps=4),
     CalibrationError, "no usable threshold for 1 of 1 spiking layer(s) ['relu']"),
    ("labels above the classes", lambda s, f: ac.evaluate(s, [(_x(), torch.full((4,), 7))], timesteps=2),
     DataError, "label 7 is outside [0, 5)"),
    ("negative labels in ANN evaluation", lambda s, f: ac.evaluate_ann(Net().eval(), [(_x(), -torch.ones(4).long())]),
     DataError, "label -1 is outside [0, 5)"),
    ("a tensor as evaluation data", lambda s, f: ac.evaluate(s, _x(), timesteps=2), DataError,
     "must be an iterable of (inputs, target) batches"),
    ("NaN weights", lambda s, f: prepare(_nan_weights(), _x()), ModelError, "weights hold NaN or Inf values"),
    ("activations that overflow", lambda s, f: prepare(_overflowing_model(), _x()), ModelError,
     "output on the example input of shape (4, 3, 8, 8) holds NaN or Inf"),
    ("record.json is a list", lambda s, f: _load_snn(f, [1, 2]), CheckpointError, "must hold a JSON object"),
    ("record.json neurons not names", lambda s, f: _load_snn(f, {"neurons": 3}), CheckpointError,
     "'neurons' must be a list of layer names"),
    ("pickled model as weights", lambda s, f: load_state_dict_file(build_model("digits_cnn", 10),
                                                                   f.root / "pickled_model.pt"),
     CheckpointError, "holds a pickled model, not a state_dict"),
    ("folder as weights", lambda s, f: load_state_dict_file(build_model("digits_cnn", 10), f.root / "a_folder"),
     CheckpointError, "is a directory, not a file"),
    ("user factory that raises", lambda s, f: build_model("bad_factories:boom", 10), ModelError,
     "failed while building the model: ValueError: factory exploded"),
    ("not a module to prepare", lambda s, f: prepare(lambda x: x, _x()), ConfigError, "expects a torch.nn.Module"),
]


@pytest.mark.parametrize(("fn", "error", "fragment"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(snn: ac.SpikingModel, files: Files, fn: Callable[..., Any], error: type[AdacalError],
                       fragment: str) -> None:
    with pytest.raises(AdacalError) as info:
        fn(snn, files)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------ CLI cases
def _convert(f: Files, *extra: str, weights: str | None = None) -> list[str]:
    return ["convert", "--model", "digits_cnn", "--dataset", "digits", "--weights", weights or str(f.weights),
            "--calib-size", "32", "--timesteps", "1", "--method", "plain", "--out", str(f.root / "out"), *extra]


def _evaluate(f: Files, name: str, edit: Callable[[Path], Any]) -> list[str]:
    folder = f.copy_snn(name)
    edit(folder)
    return ["evaluate", str(folder), "--test-size", "16", "--out", str(f.root / "eval_out")]


def _source(folder: Path, text: str) -> None:
    (folder / "source.json").write_text(text)


def _other_sweep(f: Files) -> list[str]:
    out = f.root / "sweep_other"
    base = ["sweep", "--model", "digits_cnn", "--dataset", "digits", "--weights", str(f.weights), "--methods", "plain",
            "--timesteps", "1", "--calib-size", "32", "--test-size", "16", "--no-report", "--out", str(out)]
    assert cli.main([*base, "--quiet"]) == 0
    return [*base[:-2], "--timesteps", "2", "--out", str(out)]  # other settings into the same folder


Argv = Callable[[Files], list[str]]
CLI_CASES: list[tuple[str, Argv, int, str, str]] = [
    ("scalar where a section is expected", lambda f: _convert(f, "--pipeline", "calibration=3"), 1, "ConfigError",
     "pipeline.calibration must be a section"),
    ("non-number for a number", lambda f: _convert(f, "--pipeline", "calibration.percentile=abc"), 1,
     "ConfigError", "pipeline.calibration.percentile must be a number, got 'abc'"),
    ("misspelt key", lambda f: _convert(f, "--set", "pipeline.timestep=4"), 1, "ConfigError",
     "did you mean 'timesteps'"),
    ("misspelt choice", lambda f: _convert(f, "--set", "pipeline.calibration.method=mse2"), 1, "ConfigError",
     "did you mean 'mse'"),
    ("zero batch size via --set", lambda f: _convert(f, "--set", "data.batch_size=0"), 1, "ConfigError",
     "data.batch_size must be an integer >= 1, got 0"),
    ("builtins:print as a model", lambda f: ["convert", "--model", "builtins:print", "--dataset", "digits"], 1,
     "ModelError", "model factory 'builtins:print' does not accept the arguments"),
    ("a factory that raises", lambda f: ["convert", "--model", "bad_factories:boom", "--dataset", "digits"], 1,
     "ModelError", "failed while building the model: ValueError: factory exploded"),
    ("a factory returning no module", lambda f: ["convert", "--model", "bad_factories:not_a_model", "--dataset",
                                                 "digits"], 1, "ConfigError", "returned int"),
    ("a factory module that is missing", lambda f: ["convert", "--model", "no_such_pkg_xyz:f", "--dataset", "digits"],
     1, "ConfigError", "cannot import module 'no_such_pkg_xyz'"),
    ("misspelt model", lambda f: ["convert", "--model", "resnet21", "--dataset", "digits"], 1, "ConfigError",
     "unknown model 'resnet21'; did you mean"),
    ("unknown model option", lambda f: _convert(f, "--set", "model.options.depth=3"), 1, "ModelError",
     "model 'digits_cnn' does not accept the arguments it was given (num_classes=10, depth)"),
    ("weights: a folder", lambda f: _convert(f, weights=str(f.root / "a_folder")), 1, "CheckpointError",
     "is a directory, not a file"),
    ("weights: a pickled model", lambda f: _convert(f, weights=str(f.root / "pickled_model.pt")), 1,
     "CheckpointError", "holds a pickled model, not a state_dict: save model.state_dict()"),
    ("weights: NaN", lambda f: _convert(f, weights=str(f.root / "nan.pt")), 1, "CheckpointError",
     "holds NaN or Inf values in ['features.0.weight']"),
    ("weights: overflowing", lambda f: _convert(f, weights=str(f.root / "huge.pt")), 1, "ModelError",
     "outputs NaN or Inf on the first digits batch"),
    ("weights: missing", lambda f: _convert(f, weights=str(f.root / "none.pt")), 1, "CheckpointError",
     "does not exist"),
    ("weights: not a torch file", lambda f: _convert(f, weights=str(f.root / "text.pt")), 1, "CheckpointError",
     "is not a torch file or it is damaged"),
    ("weights: other num_classes", lambda f: _convert(f, weights=str(f.root / "five.pt")), 1, "CheckpointError",
     "shape mismatch"),
    ("--num-classes against the dataset", lambda f: _convert(f, "--num-classes", "7"), 1, "ConfigError",
     "num_classes=7 does not match dataset 'digits'"),
    ("calibration larger than the training set", lambda f: _convert(f, "--calib-size", "100000"), 1,
     "ConfigError", "calib_size=100000 exceeds"),
    ("unknown dataset", lambda f: ["convert", "--model", "digits_cnn", "--dataset", "cifar11"], 1, "ConfigError",
     "unknown dataset 'cifar11'"),
    ("missing data folder", lambda f: ["convert", "--model", "resnet20", "--dataset", "cifar10", "--data-dir",
                                       str(f.root / "nowhere")], 1, "DataError", "does not exist"),
    ("labels outside the classes", lambda f: ["evaluate", str(f.copy_snn("labels_snn")), "--data-dir",
                                              str(f.root / "labels"), "--out", str(f.root / "e")], 1, "DataError",
     "is outside [0, 10)"),
    ("unknown method", lambda f: _convert(f, "--method", "adafyre"), 1, "ConfigError", "did you mean 'adafire'"),
    ("invalid device", lambda f: _convert(f, "--device", "banana"), 1, "ConfigError", "invalid --device 'banana'"),
    ("config file missing", lambda f: ["sweep", "--config", str(f.root / "nope.yaml")], 1, "ConfigError",
     "not found"),
    ("config file not YAML", lambda f: ["sweep", "--config", str(f.root / "bad.yaml")], 1, "ConfigError",
     "is not valid YAML"),
    ("record.json timesteps not a number", lambda f: _evaluate(f, "t_abc", lambda d: _record(
        d, {**json.loads((d / "record.json").read_text()), "timesteps": "abc"})), 1, "CheckpointError",
     "has no usable 'timesteps' ('abc')"),
    ("record.json a list", lambda f: _evaluate(f, "t_list", lambda d: _record(d, [1, 2, 3])), 1, "CheckpointError",
     "must hold a JSON object (the conversion record), got a list"),
    ("record.json broken", lambda f: _evaluate(f, "t_json", lambda d: (d / "record.json").write_text("{bad")), 1,
     "CheckpointError", "is not readable JSON"),
    ("snn_state.pt damaged", lambda f: _evaluate(f, "t_state", lambda d: (d / "snn_state.pt").write_bytes(b"xx")), 1,
     "CheckpointError", "cannot read the saved SNN state"),
    ("source.json broken", lambda f: _evaluate(f, "t_src", lambda d: _source(d, '{"model": 3}')), 1,
     "CheckpointError", "source.json' is corrupt"),
    ("SNN folder missing", lambda f: ["evaluate", str(f.root / "no_snn")], 1, "CheckpointError", "does not exist"),
    ("SNN folder without source.json", lambda f: ["evaluate", str(f.root / "a_folder")], 1, "CheckpointError",
     "has no source.json"),
    ("--out is a file", lambda f: _convert(f, "--out", str(f.root / "text.pt")), 1, "FileExistsError",
     "exists and is not a folder"),
    ("sweep into a folder of other settings", _other_sweep, 1, "ConfigError",
     "holds results of a sweep with other settings"),
    ("report without results", lambda f: ["report", str(f.root / "no_results")], 1, "DataError", "does not exist"),
    # usage errors (argparse): exit code 2
    ("T = 0 on the command line", lambda f: _convert(f, "--timesteps", "0"), 2, "usage", "must be >= 1, got 0"),
    ("test size not a number", lambda f: ["evaluate", "x", "--test-size", "abc"], 2, "usage",
     "expected an integer, got 'abc'"),
    ("unknown flag", lambda f: ["convert", "--timestepz", "4"], 2, "usage", "unrecognized arguments: --timestepz"),
]


@pytest.fixture
def seen_errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Class names of the exceptions that reach ``cli.main``'s handlers."""
    seen: list[str] = []
    real = cli._error_line

    def record(exc: BaseException) -> str:
        seen.append(type(exc).__name__)
        return real(exc)

    monkeypatch.setattr(cli, "_error_line", record)
    return seen


@pytest.mark.parametrize(("argv", "code", "error", "fragment"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(files: Files, seen_errors: list[str], capsys: pytest.CaptureFixture[str], argv: Argv,
                       code: int, error: str, fragment: str) -> None:
    args = argv(files)
    capsys.readouterr()
    try:
        got = cli.main([*args, "--quiet"])
    except SystemExit as exc:  # argparse usage errors
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err and "\x1b[" not in err  # no traceback, no terminal colour codes
    assert fragment in err, err
    if code == 2:
        assert "usage: adacal" in err
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"adacal {args[0]}: error: "), err
    assert seen_errors == [error]


def test_catalogue_size() -> None:
    """The issue asks for at least 40 distinct bad inputs across the API and the CLI."""
    names = [c[0] for c in API_CASES] + [c[0] for c in CLI_CASES]
    assert len(names) == len(set(names)) >= 40


def test_unexpected_errors_are_one_line_too(files: Files, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (an exception adacal does not expect) is still one line, named as such; --verbose adds the traceback."""
    from adacal import jobs

    def broken(*_: Any, **__: Any) -> None:
        raise KeyError("internal")

    monkeypatch.setattr(jobs, "load_data", broken)
    assert cli.main([*_convert(files), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adacal convert: error: unexpected KeyError: 'internal'") and "\n" not in err
    assert "--verbose" in err
    assert cli.main([*_convert(files), "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_real_process_prints_one_line(files: Files) -> None:
    """The same through ``python -m adacal``: stderr is the error line only, exit code 1."""
    env = {"PYTHONPATH": f"{Path(ac.__file__).parents[1]}:{files.root}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "adacal", "convert", "--model", "bad_factories:boom", "--dataset",
                           "digits", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == textwrap.dedent("""\
        adacal convert: error: model factory 'bad_factories:boom' failed while building the model: ValueError: \
factory exploded (run with --verbose for the traceback)""")
