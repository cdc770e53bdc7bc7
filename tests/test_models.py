"""Model definitions, the name registry and weight loading (CPU, tiny inputs)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from adacal.errors import CheckpointError, ConfigError
from adacal.models import build_model, digits_cnn, load_state_dict_file, resnet20, resnet20_wide, vgg16_cifar


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _convs(m: nn.Module) -> list[nn.Conv2d]:
    return [x for x in m.modules() if isinstance(x, nn.Conv2d)]


def test_resnet20_shapes_and_structure():
    m = resnet20(num_classes=10).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = _convs(m)
    assert len(convs) == 19 + 2  # 19 3x3 convs + 2 option-B 1x1 shortcut convs
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    assert sum(c.kernel_size == (1, 1) for c in convs) == 2
    assert 0.26e6 < sum(p.numel() for p in m.parameters()) < 0.28e6
    assert not any(isinstance(x, nn.Sequential) and len(x) == 0 for x in m.modules())


def test_resnet20_wide_widths():
    m = resnet20_wide(num_classes=100)
    assert sorted({c.out_channels for c in _convs(m)}) == [64, 128, 256]
    assert m.fc.in_features == 256 and m.fc.out_features == 100
    assert resnet20(width=8).fc.in_features == 32


def test_vgg16_and_digits_shapes():
    v = vgg16_cifar(num_classes=100).eval()
    assert len(_convs(v)) == 13
    assert sum(isinstance(x, nn.Linear) for x in v.modules()) == 2
    assert v(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    d = digits_cnn().eval()
    assert d(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_models_are_fx_traceable_relu_modules():
    for m in (resnet20(), vgg16_cifar(), digits_cnn()):
        gm = torch.fx.symbolic_trace(m)
        funcs = {n.target for n in gm.graph.nodes if n.op == "call_function"}
        assert torch.relu not in funcs and torch.nn.functional.relu not in funcs  # ReLUs are modules
        assert any(isinstance(x, nn.ReLU) for x in m.modules())


@pytest.mark.parametrize(
    "name,shape",
    [
        ("resnet20", (1, 3, 32, 32)),
        ("resnet20_wide", (1, 3, 32, 32)),
        ("vgg16_cifar", (1, 3, 32, 32)),
        ("digits_cnn", (1, 1, 8, 8)),
    ],
)
def test_build_builtin(name, shape):
    m = build_model(name, num_classes=7).eval()
    assert m(torch.randn(*shape)).shape == (1, 7)


def test_build_torchvision_without_weights():
    m = build_model("resnet18", num_classes=5)
    assert m.fc.out_features == 5


def test_build_user_factory(tmp_path, monkeypatch):
    (tmp_path / "my_adacal_models.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn
        def tiny(num_classes, hidden=3):
            layers = [nn.Flatten(), nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
            return nn.Sequential(*layers)
        def not_a_model(num_classes):
            return 42
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_model("my_adacal_models:tiny", num_classes=6, hidden=5)
    assert m[-1].out_features == 6 and m[1].out_features == 5
    with pytest.raises(ConfigError, match="returned int"):
        build_model("my_adacal_models:not_a_model", num_classes=2)
    with pytest.raises(ConfigError, match="no callable 'missing'"):
        build_model("my_adacal_models:missing", num_classes=2)
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz'"):
        build_model("no_such_pkg_xyz:f", num_classes=2)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet21'.*resnet20.*vgg16_cifar.*resnet18"):
        build_model("resnet21", num_classes=10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("resnet20", num_classes=0)


def test_load_state_dict_roundtrip(tmp_path):
    a, b = digits_cnn(), digits_cnn()
    p = tmp_path / "w.pt"
    torch.save(a.state_dict(), p)
    load_state_dict_file(b, p)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    # a training checkpoint ({"model": state_dict, ...}) is accepted too
    torch.save({"model": a.state_dict(), "epoch": 3}, tmp_path / "ck.pt")
    load_state_dict_file(digits_cnn(), tmp_path / "ck.pt")


def test_load_state_dict_errors(tmp_path):
    m = digits_cnn(num_classes=10)
    with pytest.raises(CheckpointError, match=r"nope\.pt.*does not exist"):
        load_state_dict_file(m, tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*bad\.pt"):
        load_state_dict_file(m, bad)
    other = tmp_path / "c5.pt"
    torch.save(digits_cnn(num_classes=5).state_dict(), other)
    with pytest.raises(
        CheckpointError, match=r"classifier\.3\.weight: checkpoint \(5, 64\) vs model \(10, 64\)"
    ):
        load_state_dict_file(m, other)
    torch.save(resnet20().state_dict(), tmp_path / "r.pt")
    with pytest.raises(CheckpointError, match="missing keys.*unexpected keys"):
        load_state_dict_file(m, tmp_path / "r.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_state_dict_file(m, tmp_path / "list.pt")
