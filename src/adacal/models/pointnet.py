"""PointNet (Qi et al., CVPR 2017) for 3-D shape classification and part segmentation.

Points enter as ``[B, C, N]`` (xyz, optionally normals): shared per-point MLPs are ``Conv1d(k=1)``
+ BatchNorm + ReLU, a global max over the points makes the shape feature. Every layer before a
max ends in a ReLU, as in the original (TensorFlow) PointNet, so conversion moves the max in front
of that layer's neurons and pools accumulated currents (a rate-preserving max, which converges to
the ANN's max as T grows).

* :class:`PointNetCls`: per-point MLP 64-64 | 64-128-1024, max, MLP 512-256 (dropout), logits.
* :class:`PointNetSeg` (part segmentation, a second input: the category one-hot): per-point MLP
  64-128-128 | 512-2048, max, then per point ``[global, out1..out5]`` (4928 channels) through
  256-256-128-parts. The category one-hot enters as a learned per-category bias of the first head
  layer (``Linear(categories, 256)`` added after its BatchNorm) — the same function class as the
  original's concatenation of the one-hot to every point's features, written so the head's first
  layer receives spikes only (the one-hot is a constant input, not a spike train).
* **T-Nets** (``input_transform``, ``feature_transform``; off by default): a small PointNet
  predicts a k×k matrix (initialised to the identity) that multiplies the points / features. The
  input transform multiplies the raw points (a constant input) by a spike-driven matrix: linear in
  the spikes, converted as is. The feature transform multiplies two spike-driven tensors: it has
  no spiking equivalent and must be kept in floating point with ``ConversionConfig(analog=[...])``
  (:func:`feature_transform_ops` names the op); the energy model prices it as MACs every step.
  In training mode a network with a feature transform returns ``(logits, penalty)``, the
  orthogonality penalty ``‖I − AAᵀ‖²`` of the seed's code, which the point-cloud tasks add to
  the loss (weight :data:`FEATURE_TRANSFORM_WEIGHT`); in eval mode it returns the logits only.

``width`` scales every hidden width (1.0 = the paper's network).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, fx, nn

from adacal.errors import ConfigError
from adacal.models.registry import register_model

__all__ = ["FEATURE_TRANSFORM_WEIGHT", "PointNetCls", "PointNetSeg", "TNet", "feature_transform_ops",
           "pointnet_cls", "pointnet_seg"]

#: Weight of the feature-transform orthogonality penalty in the training loss (seed code: 0.001).
FEATURE_TRANSFORM_WEIGHT = 1e-3


def _w(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _point_mlp(widths: Sequence[int], in_channels: int) -> nn.Sequential:
    """Shared per-point layers: one block ``Conv1d(k=1)`` + BatchNorm + ReLU per width."""
    blocks: list[nn.Module] = []
    for c in widths:
        blocks.append(nn.Sequential(nn.Conv1d(in_channels, c, 1), nn.BatchNorm1d(c), nn.ReLU()))
        in_channels = c
    return nn.Sequential(*blocks)


def _fc(widths: Sequence[int], in_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in widths:
        layers += [nn.Linear(in_features, c), nn.BatchNorm1d(c), nn.ReLU()]
        in_features = c
    return nn.Sequential(*layers)


def _check(width: float, in_channels: int) -> None:
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= 8:
        raise ConfigError(f"PointNet width must be a number in (0, 8], got {width!r}")
    if not isinstance(in_channels, int) or in_channels < 3:
        raise ConfigError(f"PointNet in_channels must be >= 3 (xyz first), got {in_channels!r}")


class TNet(nn.Module):
    """Predicts a ``k×k`` transform from ``[B, k_in, N]`` (a mini PointNet; starts as the identity)."""

    def __init__(self, k: int, in_channels: int | None = None, width: float = 1.0) -> None:
        super().__init__()
        self.k = k
        self.mlp = _point_mlp([_w(64, width), _w(128, width), _w(1024, width)], in_channels or k)
        self.fc = _fc([_w(512, width), _w(256, width)], _w(1024, width))
        self.out = nn.Linear(_w(256, width), k * k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("identity", torch.eye(k).flatten())

    def forward(self, x: Tensor) -> Tensor:
        g = torch.max(self.mlp(x), 2)[0]
        return (self.out(self.fc(g)) + self.identity).view(-1, self.k, self.k)


def _transform(x: Tensor, matrix: Tensor) -> Tensor:
    """``(xᵀ A)ᵀ`` for points ``[B, k, N]`` and ``A`` ``[B, k, k]``, as in the seed's code."""
    return torch.bmm(matrix.transpose(1, 2), x)


def orthogonality_penalty(matrix: Tensor) -> Tensor:
    """Mean over the batch of ``‖I − AAᵀ‖_F²`` (keeps the feature transform near orthogonal)."""
    eye = torch.eye(matrix.shape[1], device=matrix.device, dtype=matrix.dtype)
    return (eye - torch.bmm(matrix, matrix.transpose(1, 2))).pow(2).sum(dim=(1, 2)).mean()


class _Encoder(nn.Module):
    """Input transform → first MLP → feature transform → second MLP (the per-point trunk)."""

    def __init__(self, in_channels: int, first: Sequence[int], second: Sequence[int], *,
                 input_transform: bool, feature_transform: bool, width: float) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_tnet = TNet(3, width=width) if input_transform else None
        self.first = _point_mlp(first, in_channels)
        self.feature_tnet = TNet(first[-1], width=width) if feature_transform else None
        self.second = _point_mlp(second, first[-1])

    def transform_input(self, points: Tensor) -> Tensor:
        if self.input_tnet is None:
            return points
        xyz = points[:, :3]
        moved = _transform(xyz, self.input_tnet(xyz))
        return moved if self.in_channels == 3 else torch.cat([moved, points[:, 3:]], 1)

    def transform_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.feature_tnet is None:
            return x, None
        m = self.feature_tnet(x)
        return _transform(x, m), m


class PointNetCls(nn.Module):
    """PointNet classification: ``[B, C, N]`` points → ``[B, num_classes]`` logits."""

    def __init__(self, num_classes: int = 40, *, in_channels: int = 3, input_transform: bool = False,
                 feature_transform: bool = False, width: float = 1.0, dropout: float = 0.3) -> None:
        super().__init__()
        _check(width, in_channels)
        self.encoder = _Encoder(in_channels, [_w(64, width), _w(64, width)],
                                [_w(64, width), _w(128, width), _w(1024, width)],
                                input_transform=input_transform, feature_transform=feature_transform, width=width)
        self.head = _fc([_w(512, width), _w(256, width)], _w(1024, width))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(_w(256, width), num_classes)

    def forward(self, points: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        enc = self.encoder
        x = enc.first(enc.transform_input(points))
        x, m = enc.transform_features(x)
        g = torch.max(enc.second(x), 2)[0]  # the global max over points
        logits = self.classifier(self.dropout(self.head(g)))
        if self.training and m is not None:
            return logits, orthogonality_penalty(m)
        return logits


class PointNetSeg(nn.Module):
    """PointNet part segmentation: ``([B, C, N] points, [B, categories] one-hot)`` → ``[B, parts, N]``."""

    def __init__(self, num_classes: int = 50, *, num_categories: int = 16, in_channels: int = 3,
                 input_transform: bool = False, feature_transform: bool = False, width: float = 1.0) -> None:
        super().__init__()
        _check(width, in_channels)
        if not isinstance(num_categories, int) or num_categories < 1:
            raise ConfigError(f"num_categories must be a positive int, got {num_categories!r}")
        first = [_w(64, width), _w(128, width), _w(128, width)]
        second = [_w(512, width), _w(2048, width)]
        self.num_categories = num_categories
        self.encoder = _Encoder(in_channels, first, second, input_transform=input_transform,
                                feature_transform=feature_transform, width=width)
        concat = second[-1] + sum(first) + sum(second)
        h = [_w(256, width), _w(256, width), _w(128, width)]
        self.head_in = nn.Conv1d(concat, h[0], 1)
        self.head_bn = nn.BatchNorm1d(h[0])
        self.category_bias = nn.Linear(num_categories, h[0], bias=False)
        self.head_relu = nn.ReLU()
        self.head = _point_mlp(h[1:], h[0])
        self.classifier = nn.Conv1d(h[-1], num_classes, 1)

    def forward(self, points: Tensor, category: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        enc = self.encoder
        x = enc.transform_input(points)
        feats = []
        for block in enc.first:  # keep every per-point layer's output (the skip features)
            x = block(x)
            feats.append(x)
        x, m = enc.transform_features(x)
        for block in enc.second:
            x = block(x)
            feats.append(x)
        g = torch.max(x, 2)[0]  # the global max over points
        per_point = torch.cat([g.unsqueeze(2).expand_as(x), *feats], 1)
        h = self.head_bn(self.head_in(per_point)) + self.category_bias(category).unsqueeze(2)
        out = self.classifier(self.head(self.head_relu(h)))
        if self.training and m is not None:
            return out, orthogonality_penalty(m)
        return out


def pointnet_cls(num_classes: int = 40, **options: object) -> PointNetCls:
    """Factory of the model registry (``--model pointnet_cls``)."""
    return PointNetCls(num_classes, **options)  # type: ignore[arg-type]


def pointnet_seg(num_classes: int = 50, **options: object) -> PointNetSeg:
    """Factory of the model registry (``--model pointnet_seg``)."""
    return PointNetSeg(num_classes, **options)  # type: ignore[arg-type]


def feature_transform_ops(model: nn.Module) -> tuple[str, ...]:
    """Graph names of the feature-transform products (pass them as ``ConversionConfig(analog=...)``).

    They multiply spike-driven features by a spike-driven matrix; conversion refuses them unless
    they are kept in floating point. Empty for a network without a feature transform.
    """
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, _Encoder) or enc.feature_tnet is None:
        return ()
    was = model.training
    model.eval()
    try:
        gm = fx.symbolic_trace(model)
    finally:
        model.train(was)
    names = []
    for node in gm.graph.nodes:  # bmm(transpose(matrix), features) with the matrix from the feature T-Net
        if node.op != "call_function" or node.target is not torch.bmm:
            continue
        t = node.args[0]
        src = t.args[0] if isinstance(t, fx.Node) and t.args else None
        stack = src.meta.get("nn_module_stack") or {} if isinstance(src, fx.Node) else {}
        if any(path == "encoder.feature_tnet" for path, _ in stack.values()):
            names.append(node.name)
    return tuple(names)


register_model("pointnet_cls", pointnet_cls)
register_model("pointnet_seg", pointnet_seg)
