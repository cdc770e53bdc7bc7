"""Scale-out on torch.distributed: 2 gloo processes on CPU give what 1 process gives, and faults fail fast.

Each test spawns 2 processes (one thread each) on a tiny CNN and random data; the single-process
reference runs in the test process itself. Comparisons are exact (``==`` / ``torch.equal``).
"""
from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import adacal as ac
from adacal import distributed as dist_
from adacal.config import CalibrationConfig, PipelineConfig
from adacal.errors import DataError, DistributedError
from adacal.sensitivity import profile

TIMEOUT_S = 20  # collectives give up after this: a lost rank must never hang the test


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x)) + x
        return self.fc(x.mean(dim=(2, 3)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _data(30, 1)  # 3 batches of 10: an odd number, so the ranks get unequal shares
    return [(x[i:i + 10], y[i:i + 10]) for i in range(0, 30, 10)]


def _test_loader(n: int = 37) -> DataLoader:
    ds = TensorDataset(*_data(n, 2))
    return DataLoader(ds, batch_size=8, sampler=dist_.ShardSampler(ds))


def _scenario(tmp: Path) -> dict[str, Any]:
    """Convert (thresholds, φ and ρ searches, bias correction), profile with an interruption and a
    resume, evaluate (fixed T and IAT): everything a rank ends with, for comparison."""
    cfg = PipelineConfig(method="adafire+ssc", timesteps=4, phi_target=2, profile_batch=16,
                         rho_candidates=(1.0, 1.5, 2.0), calibration=CalibrationConfig(num_batches=3,
                                                                                         correction_batches=3))
    snn, record = ac.convert(_model(), _calib(), config=cfg)
    out: dict[str, Any] = {
        "thresholds": {k: n.theta.clone() for k, n in snn.neurons().items()},
        "bias": {k: n.bias_offset.clone() for k, n in snn.neurons().items()},
        "knobs": record["knobs"], "sensitivity": record["sensitivity"], "energy_table": record["energy_table"],
        "spike_table": record["spike_table"], "snn": dist_.fingerprint_model(snn),
    }
    x = torch.cat([b[0] for b in _calib()])[:12]
    full = profile(snn, x, knob="rho", candidates=(1.0, 2.0, 3.0), timesteps=4)

    def stop(i: int, _n: int, _name: str) -> None:
        if i >= 1:
            raise KeyboardInterrupt  # interrupted after the first round (both ranks at the same point)

    ckpt = tmp / "profile_rho.json"
    with pytest.raises(KeyboardInterrupt):
        profile(snn, x, knob="rho", candidates=(1.0, 2.0, 3.0), timesteps=4, checkpoint=ckpt, progress=stop)
    dist_.broadcast_object(None)  # rank 0 has written the checkpoint before anyone reads it
    resumed_from = len(dist_.broadcast_object(ckpt.read_text() if dist_.is_main() else None).split('"scores"')) - 1
    again = profile(snn, x, knob="rho", candidates=(1.0, 2.0, 3.0), timesteps=4, checkpoint=ckpt)
    out["profile"] = full.to_dict() | {"seconds": 0}
    out["resumed"] = (again.to_dict() | {"seconds": 0}) == out["profile"]
    out["resumed_layers"] = resumed_from
    ev = ac.evaluate(snn, _test_loader(), timesteps=4)
    policy = ac.fit_exit_policy(snn, _calib(), timesteps=4)
    ev_iat = ac.evaluate(snn, _test_loader(), timesteps=4, exit_policy=policy)
    out["eval"] = {k: ev[k] for k in ("accuracy", "num_samples", "mean_timesteps", "energy_mj", "ann_energy_mj")}
    out["eval_iat"] = {k: ev_iat[k] for k in ("accuracy", "num_samples", "mean_timesteps", "energy_mj",
                                              "exit_histogram")}
    from adacal.evaluate import evaluate_ann
    from adacal.iat.policy import ExitPolicy

    out["ann"] = evaluate_ann(_model(), _test_loader())
    plain, _ = ac.convert(_model(), _calib(), config=PipelineConfig(method="calibration", timesteps=4))
    mixed = ExitPolicy(thresholds=(0.0155, 0.0165, 0.0175, 0.0))  # samples of this net exit at steps 1 and 2
    ev_exit = ac.evaluate(plain, _test_loader(), timesteps=4, exit_policy=mixed)
    out["eval_exit"] = {k: ev_exit[k] for k in ("accuracy", "num_samples", "mean_timesteps", "energy_mj",
                                                "exit_histogram")}
    return out


def _faults(tmp: Path) -> dict[str, Any]:
    """A model that differs on rank 1, then a test shard empty on rank 1, then rank 1 dies in profiling."""
    seen: dict[str, Any] = {}
    model = _model()
    if dist_.world().rank == 1:
        with torch.no_grad():
            model.fc.bias[0] += 1e-3
    t0 = time.perf_counter()
    try:
        ac.convert(model, _calib(), config=PipelineConfig(method="calibration", timesteps=2))
    except DistributedError as exc:
        seen["mismatch"] = str(exc)
    snn, _ = ac.convert(_model(), _calib(), config=PipelineConfig(method="calibration", timesteps=2))
    try:
        ac.evaluate(snn, _test_loader(1), timesteps=2)
    except DataError as exc:
        seen["empty"] = str(exc)
    one = [(b[0][:1], b[1][:1]) for b in _calib()[:1]]  # one sample: nothing to correct on rank 1
    try:
        ac.convert(_model(), one, config=PipelineConfig(method="calibration", timesteps=2))
    except DataError as exc:
        seen["empty_correction"] = str(exc)
    seen["quick_s"] = time.perf_counter() - t0
    with open(tmp / f"faults_pre.{dist_.world().rank}.pkl", "wb") as f:
        pickle.dump(dict(seen), f)
    x = _calib()[0][0]

    def dies(ann: Any, out: Any) -> Any:
        if dist_.world().rank == 1:
            os._exit(3)  # a rank lost mid-profile, with no goodbye
        return torch.zeros(())

    t0 = time.perf_counter()
    try:
        profile(snn, x, knob="phi", candidates=(1, 2), timesteps=2, divergence=dies,
                checkpoint=tmp / "dead.json")
    except DistributedError as exc:
        seen["death"] = str(exc)
    seen["death_s"] = time.perf_counter() - t0
    return seen


def _worker(rank: int, size: int, port: int, tmp: str, job: str) -> None:
    torch.set_num_threads(1)
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            timeout=timedelta(seconds=TIMEOUT_S))
    try:
        result: Any = {"scenario": _scenario, "faults": _faults}[job](Path(tmp))
    except BaseException:  # noqa: BLE001 - reported to the test process
        result = {"crash": traceback.format_exc()}
    with open(Path(tmp) / f"{job}.{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    os._exit(0)  # no group teardown: a dead peer must not make exit hang


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(job: str, tmp: Path, size: int = 2, wait_s: float = 90) -> list[Any]:
    ctx = torch.multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, size, port, str(tmp), job)) for r in range(size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + wait_s
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"rank(s) {hung} hung"
    out = []
    for r in range(size):
        f = tmp / f"{job}.{r}.pkl"
        out.append(pickle.loads(f.read_bytes()) if f.exists() else None)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_two_processes_equal_one(tmp_path: Path, single_thread: None) -> None:
    (tmp_path / "one").mkdir()
    one = _scenario(tmp_path / "one")
    two = _spawn("scenario", tmp_path)
    for rank, got in enumerate(two):
        assert got is not None and "crash" not in got, got and got.get("crash")
        for key in one:
            if key == "resumed_layers":
                continue
            assert _same(one[key], got[key]), f"rank {rank}: {key} differs from one process"
        assert got["resumed"]
    assert two[0]["resumed_layers"] == 2  # one round of 2 ranks = 2 layers checkpointed before the stop
    assert one["resumed_layers"] == 1 and one["resumed"]
    assert one["eval"]["num_samples"] == 37
    assert sum(1 for h in one["eval_exit"]["exit_histogram"] if h) >= 2  # early exits at several steps


def test_faults_fail_on_every_rank_without_hanging(tmp_path: Path) -> None:
    t0 = time.monotonic()
    ranks = _spawn("faults", tmp_path, wait_s=TIMEOUT_S + 60)
    survivor = ranks[0]
    assert survivor is not None and "crash" not in survivor, survivor and survivor.get("crash")
    for rank in range(2):
        r = pickle.loads((tmp_path / f"faults_pre.{rank}.pkl").read_bytes())
        assert "model differs across ranks" in r["mismatch"] and "[1]" in r["mismatch"]
        assert "rank 1 of 2" in r["empty"] and "empty" in r["empty"]
        assert "rank 1's shard is empty" in r["empty_correction"]
    assert ranks[1] is None  # it died
    assert not (tmp_path / "dead.json").exists()  # no round finished: no (half-written) checkpoint
    assert "another rank died" in survivor["death"]
    assert survivor["death_s"] < TIMEOUT_S + 5
    assert time.monotonic() - t0 < TIMEOUT_S + 60


def _timeless(value: Any) -> Any:
    """A results entry without its wall times (which no two runs share)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in ("time_s", "stage_times", "profile_seconds",
                                                                        "seconds")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_torchrun_sweep_equals_one_process(tmp_path: Path, single_thread: None) -> None:
    """``torchrun -m adacal sweep`` with 2 gloo ranks writes (from rank 0) the results of one process."""
    import json
    import subprocess
    import sys

    from adacal.cli import main

    argv = ["sweep", "--model", "digits_cnn", "--dataset", "digits", "--methods", "calibration,adafire",
            "--timesteps", "2", "--no-iat", "--no-report", "--threads", "1", "--test-size", "101",
            "--calib-size", "64", "--batch-size", "32", "--set", "pipeline.calibration.num_batches=2",
            "--set", "pipeline.calibration.correction_batches=2", "--set", "pipeline.profile_batch=16", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADACAL_DIST_TIMEOUT": str(TIMEOUT_S),
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "adacal", *argv, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["runs"][0]["num_samples"] == 101
    assert _timeless(one["runs"]) == _timeless(two["runs"])
    assert one["ann"]["metrics"] == two["ann"]["metrics"]


def test_shards_cover_every_sample_once() -> None:
    for n in (0, 1, 5, 37):
        for size in (1, 2, 3):
            ws = [dist_.World(r, size) for r in range(size)]
            strided = sorted(i for w in ws for i in dist_.ShardSampler(n, w))
            blocks = [dist_.shard_samples(n, w) for w in ws]
            assert strided == list(range(n))
            assert [s for s, _ in blocks] == [sum(b for _, b in blocks[:r]) for r in range(size)]
            assert sum(b for _, b in blocks) == n and max(b for _, b in blocks) - min(b for _, b in blocks) <= 1
            assert sorted(x for w in ws for x in dist_.deal(list(range(n)), w)) == list(range(n))


def test_one_process_helpers_are_identities() -> None:
    assert dist_.world() == dist_.World(0, 1) and dist_.is_main()
    t = torch.arange(3.0)
    assert dist_.all_reduce_sum([t])[0] is t and dist_.gather_objects("x") == ["x"]
    dist_.agree(None, what="nothing")
    with pytest.raises(DataError, match="local"):
        dist_.agree(DataError("local"), what="a step")
    assert dist_.fingerprint_model(_model()) == dist_.fingerprint_model(_model())
