"""The command line through ``main([...])``: help, config files, error messages, end-to-end runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from adacal import jobs
from adacal.cli import build_parser, job_for, main
from adacal.errors import ConfigError
from adacal.models import digits_cnn

COMMANDS = ("demo", "train", "convert", "evaluate", "sweep", "export", "report")
SUMMARY_KEYS = {
    "schema",
    "task",
    "version",
    "kind",
    "created",
    "adacal_version",
    "command",
    "environment",
    "model",
    "ann",
    "settings",
    "training",
    "runs",
    "timing",
}
RUN_KEYS = {
    "name",
    "method",
    "timesteps",
    "iat",
    "num_samples",
    "metrics",
    "metrics_per_step",
    "energy_mj",
    "ann_energy_mj",
    "energy_ratio",
    "mean_timesteps",
    "exit_histogram",
    "layers",
    "neurons",
    "iat_policy",
    "iat_curve",
    "conversion",
    "time_s",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _fail(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a command that must fail cleanly; returns its one-line error message."""
    code = main([*argv, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"adacal {argv[0]}: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits_cnn state_dict trained for one epoch through 'adacal train'."""
    out = tmp_path_factory.mktemp("train")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            [
                "train",
                "--model",
                "digits_cnn",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
    finally:
        torch.set_num_threads(old)
    assert code == 0
    assert (out / "model.pt").is_file() and (out / "train.json").is_file()
    return out / "model.pt"


# --------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"adacal {command}" in out
    for flag in ("--config", "--device", "--seed", "--out", "--verbose", "--quiet"):
        assert flag in out, flag


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS) and "adacal demo" in out


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--timestep", "2"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_parser_is_fresh_each_call() -> None:
    assert build_parser() is not build_parser()


# --------------------------------------------------------------------------------------- config files
def test_flags_override_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model: {name: digits_cnn}\ndata: {dataset: digits}\npipeline: {phi_target: 3, energy_ratio: 0.8, "
        "method: plain}\nsweep: {methods: all, timesteps: [2, 4]}\n"
    )
    job = job_for(["sweep", "--config", str(cfg), "--timesteps", "8", "--pipeline", "calibration.method=max"])
    assert job.sweep.timesteps == (8,) and job.pipeline.phi_target == 3 and job.model.name == "digits_cnn"
    assert job.sweep.methods == ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
    assert job.pipeline.energy_ratio == 0.8 and job.pipeline.calibration.method == "max"
    conv = job_for(["convert", "--config", str(cfg), "--timesteps", "4", "--set", "pipeline.calibration.grid_size=50"])
    assert conv.pipeline.method == "plain" and conv.pipeline.timesteps == 4
    assert conv.pipeline.calibration.grid_size == 50


def test_packaged_configs_resolve_by_name() -> None:
    job = job_for(["sweep", "--config", "resnet20_cifar10"])
    assert job.model.name == "resnet20" and job.sweep.timesteps == (2, 4, 8, 16)
    assert job_for(["train", "--config", "digits"]).train.epochs == 8
    assert job_for(["demo", "--config", "demo"]).sweep.iat is True
    img = job_for(["evaluate", "x", "--config", "resnet34_imagenet"])
    assert img.evaluate.alpha_base == 0.995 and img.data.num_workers == 8


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sweep: {timesteps: [2, zero]}\n", "timesteps"),
        ("sweep: {timestepz: 4}\n", "unknown option 'sweep.timestepz'; did you mean 'timesteps'"),
        ("datta: {dataset: digits}\n", "did you mean 'data'"),
        ("sweep: {methods: [plain], iat: maybe}\n", "iat"),
        ("sweep: {methods: [adafire+scc]}\n", r"did you mean 'adafire\+ssc'"),
        ("sweep: {timesteps: [2\n", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("pipeline: 3\n", "must be a section"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        job_for(["sweep", "--config", str(cfg)])


def test_config_errors_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pipeline: {phi_target: -3}\n")
    assert "phi_target must be an integer >= 1, got -3" in _fail(["sweep", "--config", str(cfg)], capsys)
    assert "not found" in _fail(["sweep", "--config", str(tmp_path / "nope.yaml")], capsys)


# --------------------------------------------------------------------------------------- bad input
def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _fail(
        [
            "convert",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--weights",
            str(tmp_path / "no.pt"),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "does not exist" in msg and "no.pt" in msg


def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file" * 10)
    msg = _fail(
        [
            "sweep",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--weights",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "cannot read checkpoint" in msg


def test_checkpoint_for_other_num_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "five.pt"
    torch.save(digits_cnn(num_classes=5).state_dict(), path)
    msg = _fail(
        [
            "convert",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--weights",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "shape mismatch" in msg and "num_classes" in msg


def test_num_classes_flag_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _fail(
        [
            "train",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--num-classes",
            "7",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "num_classes=7" in msg and "10 classes" in msg


def test_model_that_does_not_fit_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _fail(["train", "--model", "resnet20", "--dataset", "digits", "--out", str(tmp_path / "o")], capsys)
    assert "cannot process inputs" in msg or "outputs" in msg


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _fail(
        ["train", "--model", "no_such_net", "--dataset", "digits", "--out", str(tmp_path / "o")], capsys
    )
    assert "unknown model 'no_such_net'" in msg


def test_wrong_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _fail(
        [
            "sweep",
            "--model",
            "resnet20",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "does not exist" in msg and "--data-dir" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _fail(
        [
            "convert",
            "--model",
            "resnet20",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(empty),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "no 'cifar10' data found" in msg


def test_missing_required_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--model is required" in _fail(["sweep", "--dataset", "digits", "--out", str(tmp_path)], capsys)
    assert "--dataset is required" in _fail(
        ["sweep", "--model", "digits_cnn", "--out", str(tmp_path)], capsys
    )


def test_invalid_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown method" in _fail(
        [
            "sweep",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--methods",
            "plain,magic",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert "invalid --device" in _fail(["demo", "--device", "banana", "--out", str(tmp_path)], capsys)
    assert "unknown dataset" in _fail(
        ["sweep", "--model", "digits_cnn", "--dataset", "svhn", "--out", str(tmp_path)], capsys
    )
    assert "unknown option 'pipeline.no_such_option'" in _fail(
        [
            "convert",
            "--model",
            "digits_cnn",
            "--dataset",
            "digits",
            "--pipeline",
            "no_such_option=1",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    msg = _fail(["demo", "--fast", "--out", str(blocker / "sub")], capsys)
    assert "choose another --out" in msg
    msg = _fail(["demo", "--fast", "--out", str(blocker)], capsys)
    assert "not a folder" in msg


def test_missing_results_and_snn_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "does not exist" in _fail(["report", str(tmp_path / "none")], capsys)
    assert "does not exist" in _fail(["evaluate", str(tmp_path / "none")], capsys)
    (tmp_path / "plain").mkdir()
    assert "pass --model" in _fail(["evaluate", str(tmp_path / "plain")], capsys)


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train", "--model", "no_such_net", "--dataset", "digits", "--out", str(tmp_path), "--verbose"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "unknown model" in err


def test_logging_handler_is_removed_after_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("adacal")
    before = list(logger.handlers)
    _fail(["report", str(tmp_path / "none")], capsys)
    assert logger.handlers == before


# --------------------------------------------------------------------------------------- end to end
def _check_summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert SUMMARY_KEYS <= set(data)
    assert data["schema"] == "adacal-results" and data["version"] == 2
    for run in data["runs"]:
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
    return data


def test_demo_fast_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    data = _check_summary(out / "summary.json")
    methods = {(r["method"], r["iat"]) for r in data["runs"]}
    assert methods == {
        ("plain", False),
        ("calibration", False),
        ("burstfire", False),
        ("adafire", False),
        ("adafire+ssc", False),
        ("adafire+ssc", True),
    }
    assert data["kind"] == "demo" and data["training"]["epochs"] == 3 and data["ann"]["metrics"]["accuracy"] > 50
    assert {r["timesteps"] for r in data["runs"]} == {2}
    for r in data["runs"]:
        assert 0 <= r["metrics"]["accuracy"] <= 100 and r["energy_mj"] > 0 and 0 < r["energy_ratio"]
    iat = next(r for r in data["runs"] if r["iat"])
    assert sum(iat["exit_histogram"]) == 128 and 1 <= iat["mean_timesteps"] <= 2 and iat["iat_curve"]
    ssc = next(r for r in data["runs"] if r["method"] == "adafire+ssc" and not r["iat"])
    assert set(ssc["conversion"]["frontiers"]) == {"phi", "rho"}
    for name in (
        "metric_vs_timesteps",
        "metric_vs_energy",
        "layer_settings",
        "pareto_phi",
        "pareto_rho",
        "layer_energy",
        "iat_exit_histogram",
        "iat_curve",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name
    assert "metric_vs_timesteps.png" in (out / "report.html").read_text()
    assert "pareto_phi.png" in (out / "report.md").read_text()
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["method", "T", "top-1", "accuracy"]
    assert any(line.startswith("ann ") for line in lines) and any(
        "adafire+ssc + IAT" in line for line in lines
    )

    # an interrupted second run into the same folder leaves the first results intact
    first = (out / "summary.json").read_bytes()
    real_evaluate = jobs.evaluate_snn
    calls = []

    def interrupt_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(jobs, "evaluate_snn", interrupt_second_run)
    assert main(["demo", "--fast", "--out", str(out), "--quiet"]) == 130
    monkeypatch.setattr(jobs, "evaluate_snn", real_evaluate)
    assert (out / "summary.json").read_bytes() == first
    assert [r["name"] for r in _check_summary(out / "summary.partial.json")["runs"]] == ["plain@T2"]
    # a finished second run replaces the results and removes the partial file and temp files
    assert (
        main(
            ["demo", "--fast", "--out", str(out), "--quiet", "--no-iat", "--methods", "plain", "--no-report"]
        )
        == 0
    )
    second = _check_summary(out / "summary.json")
    assert [r["name"] for r in second["runs"]] == ["plain@T2"]
    assert not (out / "summary.partial.json").exists() and not list(out.glob(".*.tmp"))
    # 'report' redraws plots and pages from the saved results
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert (tmp_path / "again" / "report.html").is_file()
    assert "plain" in capsys.readouterr().out


def test_train_convert_evaluate_sweep(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snn = tmp_path / "snn"
    assert (
        main(
            [
                "convert",
                "--model",
                "digits_cnn",
                "--dataset",
                "digits",
                "--weights",
                str(weights),
                "--method",
                "adafire",
                "--timesteps",
                "2",
                "--calib-size",
                "64",
                "--out",
                str(snn),
                "--quiet",
            ]
        )
        == 0
    )
    assert (snn / "source.json").is_file()
    assert "features.2" in capsys.readouterr().out

    assert main(["evaluate", str(snn), "--iat", "--test-size", "64", "--quiet"]) == 0
    data = _check_summary(snn / "eval" / "summary.json")
    (run,) = data["runs"]
    assert (
        run["iat"]
        and run["method"] == "adafire"
        and run["timesteps"] == 2
        and sum(run["exit_histogram"]) == 64
    )
    assert "adafire + IAT" in capsys.readouterr().out

    assert (
        main(
            [
                "evaluate",
                str(snn),
                "--timesteps",
                "3",
                "--test-size",
                "32",
                "--out",
                str(tmp_path / "e3"),
                "--quiet",
            ]
        )
        == 0
    )
    assert _check_summary(tmp_path / "e3" / "summary.json")["runs"][0]["timesteps"] == 3

    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--model",
                "digits_cnn",
                "--dataset",
                "digits",
                "--weights",
                str(weights),
                "--methods",
                "plain,burstfire",
                "--timesteps",
                "1,2",
                "--test-size",
                "64",
                "--calib-size",
                "64",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = _check_summary(out / "summary.json")
    assert [r["name"] for r in data["runs"]] == ["plain@T1", "burstfire@T1", "plain@T2", "burstfire@T2"]
    assert (out / "metric_vs_timesteps.png").is_file() and (out / "report.md").is_file()
