"""Training loop: learning on real (tiny) digits data, exact resume, checkpoint safety, errors."""

from __future__ import annotations

import logging

import pytest
import torch

from adacal.datasets import get_splits, make_loader
from adacal.errors import CheckpointError, ConfigError
from adacal.evaluate import evaluate_ann
from adacal.models import digits_cnn
from adacal.training import TrainConfig, _lr_factor, train_model


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return get_splits("digits", calib_size=64, seed=0)


def _small_model():
    torch.manual_seed(0)
    return digits_cnn(width=8)


class _Interrupting:
    """Wraps a loader and raises after ``stop_after`` batches in total, like a killed process."""

    def __init__(self, loader, stop_after):
        self.loader, self.stop_after, self.n = loader, stop_after, 0
        self.generator = loader.generator

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for b in self.loader:
            self.n += 1
            if self.n > self.stop_after:
                raise KeyboardInterrupt
            yield b


def test_training_improves_accuracy(digits, caplog):
    model = _small_model()
    test_loader = make_loader(digits.test, 256)
    before = evaluate_ann(model, test_loader)["accuracy"]
    caplog.set_level(logging.INFO, logger="adacal.training")
    res = train_model(
        model,
        make_loader(digits.train, 64, shuffle=True, seed=0),
        epochs=6,
        lr=0.05,
        weight_decay=5e-4,
        momentum=0.9,
        device="cpu",
        eval_loader=test_loader,
        log_every=10,
        label_smoothing=0.1,
    )
    assert before < 30.0
    assert res["final_eval"]["accuracy"] > 85.0 and res["final_eval"] == res["history"][-1]["eval"]
    assert [h["epoch"] for h in res["history"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    assert any("epoch 6/6" in r.getMessage() and "eval accuracy" in r.getMessage() for r in caplog.records)
    assert any("batch 10/" in r.getMessage() for r in caplog.records)
    assert model.training  # evaluate_ann restores the mode


def test_resume_continues_from_stored_epoch(digits, tmp_path):
    kw = dict(epochs=3, lr=0.05, weight_decay=5e-4, momentum=0.9, device="cpu", log_every=0, seed=1)
    ref = _small_model()
    train_model(ref, make_loader(digits.train, 128, shuffle=True, seed=1), **kw)

    ckpt = tmp_path / "run.ckpt"
    model = _small_model()
    loader = make_loader(digits.train, 128, shuffle=True, seed=1)
    with pytest.raises(KeyboardInterrupt):  # killed during epoch 2
        train_model(model, _Interrupting(loader, stop_after=len(loader) + 3), checkpoint_path=ckpt, **kw)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temp files left behind

    resumed = _small_model()
    res = train_model(
        resumed, make_loader(digits.train, 128, shuffle=True, seed=1), checkpoint_path=ckpt, **kw
    )
    assert res["resumed_from_epoch"] == 1 and len(res["history"]) == 3
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    for k, v in ref.state_dict().items():  # identical to the uninterrupted run
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-5), k

    # a finished run resumes as a no-op; resume=False starts over
    again = train_model(_small_model(), loader, checkpoint_path=ckpt, **kw)
    assert again["resumed_from_epoch"] == 3
    with pytest.raises(CheckpointError, match=r"different settings.*'epochs': \(3, 5\)"):
        train_model(_small_model(), loader, checkpoint_path=ckpt, **{**kw, "epochs": 5})
    fresh = train_model(
        _small_model(), loader, checkpoint_path=ckpt, resume=False, **{**kw, "epochs": 1}
    )
    assert fresh["resumed_from_epoch"] == 0


def test_corrupt_checkpoint_is_reported(digits, tmp_path):
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"cannot read training checkpoint .*bad\.ckpt.*resume=False"):
        train_model(
            _small_model(),
            make_loader(digits.calib, 32),
            epochs=1,
            lr=0.1,
            weight_decay=0.0,
            momentum=0.9,
            device="cpu",
            checkpoint_path=ckpt,
        )


def test_invalid_settings(digits):
    loader = make_loader(digits.calib, 32)
    base = dict(epochs=1, lr=0.1, weight_decay=0.0, momentum=0.9, device="cpu")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        train_model(_small_model(), loader, **{**base, "epochs": 0})
    with pytest.raises(ConfigError, match="unknown schedule 'step'"):
        train_model(_small_model(), loader, schedule="step", **base)
    with pytest.raises(ConfigError, match="nesterov=True needs momentum"):
        train_model(_small_model(), loader, **{**base, "momentum": 0.0})
    with pytest.raises(ConfigError, match="loss became"):
        train_model(_small_model(), loader, **{**base, "lr": 1e30}, schedule="constant")


def test_lr_schedules():
    cfg = TrainConfig(
        epochs=10,
        lr=0.1,
        weight_decay=0,
        momentum=0.9,
        nesterov=True,
        schedule="onecycle",
        warmup_frac=0.0,
        label_smoothing=0.0,
        steps_per_epoch=10,
    )
    f = [_lr_factor(cfg, s) for s in range(100)]
    assert f[0] == pytest.approx(1 / 25, abs=0.01) and max(f) == pytest.approx(1.0)
    assert f.index(max(f)) == 15 and f[-1] < 1e-3
    cos = TrainConfig(**{**cfg.__dict__, "schedule": "cosine"})
    g = [_lr_factor(cos, s) for s in range(100)]
    assert g[0] == pytest.approx(1.0) and all(a >= b for a, b in zip(g[:-1], g[1:], strict=True))
