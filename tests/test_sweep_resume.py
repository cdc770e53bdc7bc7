"""A sweep killed mid-run resumes: the same command skips the finished runs; other settings are refused.

The interruption is real: ``python -m adacal sweep`` in a subprocess, killed with SIGKILL (no
cleanup, no ``finally``) as soon as its ``summary.partial.json`` holds a finished run.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import adacal
from adacal import cli
from adacal.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")

RUNS = ["plain@T1", "calibration@T1", "burstfire@T1", "plain@T2", "calibration@T2", "burstfire@T2", "plain@T3",
        "calibration@T3", "burstfire@T3"]


def _argv(weights: Path, out: Path, timesteps: str = "1,2,3") -> list[str]:
    return ["sweep", "--model", "digits_cnn", "--dataset", "digits", "--weights", str(weights), "--methods",
            "plain,calibration,burstfire", "--timesteps", timesteps, "--calib-size", "32", "--test-size", "64",
            "--no-report", "--threads", "1", "--out", str(out)]


def _kill_after_first_run(argv: list[str], out: Path, timeout: float = 300.0) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(Path(adacal.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "adacal", *argv, "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    partial = out / "summary.partial.json"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.is_file():
                runs = json.loads(partial.read_text())["runs"]  # atomic writes: never half a file
                if runs:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the sweep was not killed mid-run (rc {proc.returncode}): {err!r}"
    assert not (out / "summary.json").exists()
    return json.loads(partial.read_text())["runs"]


def test_killed_sweep_resumes_and_refuses_other_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(build_model("digits_cnn", 10).state_dict(), weights)
    out = tmp_path / "sweep"
    before = _kill_after_first_run(_argv(weights, out), out)
    done = [r["name"] for r in before]
    assert 1 <= len(done) < len(RUNS) and done == RUNS[: len(done)]

    # the same command again: finished runs are taken over as they were (their timings prove it), the rest run
    with caplog.at_level(logging.INFO, logger="adacal.jobs"):
        assert cli.main(_argv(weights, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == RUNS
    assert summary["runs"][: len(done)] == before
    assert f"resuming from {out / 'summary.partial.json'}: {len(done)} runs already done" in caplog.text
    assert sum("already done (resumed)" in m for m in caplog.messages) == len(done)
    assert not (out / "summary.partial.json").exists()

    # other settings into the same folder: refused, results untouched; --restart starts over
    capsys.readouterr()
    finished = (out / "summary.json").read_bytes()
    assert cli.main([*_argv(weights, out, "1,2"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "holds results of a sweep with other settings" in err and "--restart" in err
    assert (out / "summary.json").read_bytes() == finished
    assert cli.main([*_argv(weights, out, "1,2"), "--quiet", "--restart"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in again["runs"]] == RUNS[:6]
    assert again["runs"][0]["time_s"] != before[0]["time_s"]  # recomputed, not taken over


def test_atomic_writes_never_leave_half_a_file(tmp_path: Path) -> None:
    """A writer that dies half-way (an exception, Ctrl-C) leaves the previous file as it was and no temp file."""
    from adacal.atomic import atomic_write, atomic_write_json

    path = tmp_path / "summary.json"
    atomic_write_json(path, {"runs": [1, 2, 3]})
    before = path.read_bytes()

    def dies_half_way(f) -> None:  # noqa: ANN001 - a binary file
        f.write(b'{"runs": [1, 2')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_half_way)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    atomic_write_json(path, {"runs": [4]})
    assert json.loads(path.read_text()) == {"runs": [4]} and oct(path.stat().st_mode & 0o777) == "0o644"
