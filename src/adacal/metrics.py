"""Pure metrics shared by search, evaluation and diagnostics."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["symmetric_kl", "topk_accuracy"]


def symmetric_kl(p_logits: Tensor, q_logits: Tensor, dim: int = 1) -> Tensor:
    """½[KL(P‖Q) + KL(Q‖P)] of the softmax distributions, averaged over every other axis.

    Computed from log-softmax (stable for large logits). For dense outputs (``[B, C, H, W]``)
    the mean runs over images and pixels alike.
    """
    lp = F.log_softmax(p_logits.double(), dim=dim)
    lq = F.log_softmax(q_logits.double(), dim=dim)
    kl = ((lp.exp() - lq.exp()) * (lp - lq)).sum(dim=dim)  # = KL(P‖Q) + KL(Q‖P)
    return 0.5 * kl.mean()


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Percentage of samples whose label is among the k largest logits."""
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean() * 100)


