"""Progress of long work: the library reports tasks, a reporter decides what a person sees."""
from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import adacal as ac
from adacal import cli, progress
from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.convert import prepare
from adacal.models import build_model
from adacal.training import train_model

pytestmark = pytest.mark.usefixtures("single_thread")


class Recorder:
    """Keeps every task: name, total, units done, whether it was finished."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def start(self, name: str, total: int | None, unit: str) -> Any:
        rec = {"name": name, "total": total, "unit": unit, "done": 0, "finished": False}
        self.tasks.append(rec)

        class H:
            def advance(self, n: int = 1) -> None:
                rec["done"] += n

        h = H()
        h.rec = rec  # type: ignore[attr-defined]
        return h

    def finish(self, handle: Any) -> None:
        handle.rec["finished"] = True

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t["name"].startswith(prefix)]


def test_eta_and_formatting() -> None:
    assert progress.eta_seconds(25, 100, 10.0) == pytest.approx(30.0)
    assert progress.eta_seconds(0, 100, 10.0) is None and progress.eta_seconds(5, None, 1.0) is None
    assert progress.eta_seconds(100, 100, 7.0) == 0.0
    assert [progress.format_seconds(s) for s in (None, 4.4, 65, 3 * 3600 + 4 * 60 + 27)] == ["?", "4s", "1:05",
                                                                                             "3:04:27"]


def test_nothing_is_reported_without_a_reporter() -> None:
    with progress.task("x", 3) as bar:
        bar.advance()  # the silent handle: no reporter, no output, no error
    assert list(progress.track([1, 2], "y")) == [1, 2]


def test_evaluation_calibration_and_profiling_report_progress(small_cnn: torch.nn.Module, images: Any) -> None:
    data = [(images(4, seed=i), torch.randint(0, 5, (4,))) for i in range(3)]
    rec = Recorder()
    with progress.reporting(rec):
        snn = prepare(small_cnn, images(4))
        calibrate_thresholds(snn, images(8), timesteps=4)
        correct_bias(snn, images(8), timesteps=4)
        ac.evaluate(snn, data, timesteps=4)
        ac.evaluate_ann(small_cnn, data)
        ac.fit_exit_policy(snn, data, timesteps=4)
        ac.profile(snn, images(8), knob="phi", candidates=[1, 2], timesteps=4)
    by_name = {t["name"]: t for t in rec.tasks}
    assert by_name["evaluate T=4"]["total"] == 3 and by_name["evaluate T=4"]["done"] == 3
    assert by_name["evaluate ANN"]["done"] == 3 and by_name["fit IAT policy T=4"]["done"] == 3
    assert by_name["thresholds (mse)"]["total"] == 1 and by_name["thresholds (mse)"]["done"] >= 1
    assert by_name["bias correction"]["total"] == by_name["bias correction"]["done"] == 2  # one step per neuron
    assert by_name["profile phi"]["total"] == by_name["profile phi"]["done"] == 2
    assert all(t["finished"] for t in rec.tasks)


def test_training_reports_progress_per_epoch(small_cnn: torch.nn.Module, images: Any) -> None:
    x = images(16)
    loader = DataLoader(TensorDataset(x, torch.randint(0, 5, (16,))), batch_size=8)
    rec = Recorder()
    with progress.reporting(rec):
        train_model(small_cnn, loader, epochs=2, lr=0.01, log_every=0)
    assert [(t["name"], t["total"], t["done"]) for t in rec.named("train")] == [
        ("train epoch 1/2", 2, 2), ("train epoch 2/2", 2, 2)]


def test_log_reporter_lines_have_the_time_left(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    reporter = progress.LogReporter(5.0, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="adacal.progress"), progress.reporting(reporter):
        with progress.task("sweep", 4, "run") as outer:
            for _ in range(4):
                with progress.task("evaluate T=2", 4, "batch") as inner:
                    for _ in range(4):
                        now[0] += 1.5
                        inner.advance()
                outer.advance()
    lines = caplog.messages
    assert "sweep > evaluate T=2: 4/4 batch (100%), 6s elapsed, ~0s left" in lines  # nested path, rate, ETA
    assert "sweep > evaluate T=2: done, 4 batch in 6s" in lines
    assert "sweep: 1/4 run (25%), 6s elapsed, ~18s left" in lines
    assert lines[-1] == "sweep: done, 4 run in 24s"
    assert not any("1/4 batch" in line for line in lines)  # at most one line per interval, not one per step


def test_tqdm_reporter_draws_bars() -> None:
    out = io.StringIO()
    with progress.reporting(progress.TqdmReporter(out)):
        list(progress.track(range(5), "evaluate T=8", unit="batch"))
    text = out.getvalue()
    assert "evaluate T=8" in text and "100%" in text and "5/5" in text


def test_console_picks_a_bar_for_terminals_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress.console(Tty()), progress.TqdmReporter)
    assert isinstance(progress.console(io.StringIO()), progress.LogReporter)


def test_cli_shows_progress_lines_unless_quiet(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (captured stderr): log lines; every task longer than the interval (0 here) is reported."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    weights = tmp_path / "w.pt"
    torch.save(build_model("digits_cnn", 10).state_dict(), weights)
    argv = ["sweep", "--model", "digits_cnn", "--dataset", "digits", "--weights", str(weights), "--methods",
            "plain,burstfire", "--timesteps", "1", "--calib-size", "32", "--test-size", "32", "--no-report"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "adacal.progress: sweep: 1/2 conversion (50%)" in err and "left" in err
    assert "adacal.progress: sweep > evaluate T=1: done, 1 batch in" in err
    assert "adacal.progress: sweep: done, 2 conversion in" in err
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "adacal.progress" not in capsys.readouterr().err
