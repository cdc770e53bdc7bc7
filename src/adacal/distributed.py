"""Scale-out on ``torch.distributed``: the few collectives the engine and the jobs need.

One code path for any number of ranks: with no process group every helper is the identity (world
size 1, rank 0), so single-process code pays nothing. Launch with ``torchrun`` (the CLI initialises
the group from its environment: gloo on CPU, NCCL on CUDA) or initialise a group yourself before
calling :func:`adacal.convert` / :func:`adacal.evaluate`.

What is split and how it is put back together:

- calibration statistics (threshold histograms and maxima, bias-correction means): every rank sees
  the same calibration batches and takes its share; sums, counts and maxima are all-reduced, so the
  thresholds and bias currents are those of one process on all the data;
- profiling: the ``(layer, candidate)`` pairs are dealt round-robin and the rows gathered, so every
  rank builds the same table;
- evaluation: test data sharded by :class:`ShardSampler` (no padding, so no sample counts twice);
  correct counts, spike counts and sample totals are summed, task metrics sync through torchmetrics.

Faults never hang: collectives run under the group's timeout, a rank that dies surfaces as
:class:`~adacal.errors.DistributedError` on the others, and :func:`agree` turns a local error on one
rank (an empty shard, a bad file) into the same error on every rank.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from adacal.errors import AdacalError, DistributedError

__all__ = [
    "ShardSampler", "World", "agree", "all_reduce_sum", "broadcast_object", "check_same", "check_same_model",
    "collective", "deal", "fingerprint_model", "gather_objects", "init_from_env", "is_main", "shard_indices",
    "shard_samples", "world",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a collective may wait for the other ranks before every rank fails (``ADACAL_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` ranks (0 of 1 without a process group)."""

    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's rank and the world size; ``World(0, 1)`` when no process group is up."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def is_main() -> bool:
    """Whether this rank writes files and prints (rank 0, or the only process)."""
    return world().rank == 0


def timeout_from_env() -> timedelta:
    """``ADACAL_DIST_TIMEOUT`` seconds (default 30 min): how long a rank waits for the others."""
    raw = os.environ.get("ADACAL_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"ADACAL_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return timedelta(seconds=seconds)


def init_from_env(device: str = "cpu") -> torch.device | None:
    """Start the process group ``torchrun`` describes (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``...).

    Returns the device this rank should use (``cuda:LOCAL_RANK`` for a CUDA ``device``), or None when
    the environment names no multi-process launch. Backend: NCCL for CUDA, gloo otherwise.
    """
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return None
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    dev = torch.device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timeout_from_env())
    log.info("process group up: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dev


# --------------------------------------------------------------------------------------- collectives
@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective (a rank died, a timeout) into one clear DistributedError."""
    try:
        yield
    except AdacalError:
        raise
    except (RuntimeError, ValueError) as exc:  # gloo/NCCL report peer loss and timeouts as these
        w = world()
        first = (str(exc).splitlines() or [""])[0][:300]
        raise DistributedError(
            f"rank {w.rank} of {w.size}: {what} failed: another rank died, stopped early or timed out "
            f"({type(exc).__name__}: {first}); see the other ranks' errors and rerun (checkpoints stay valid)"
        ) from exc


def _device_for(t: Tensor) -> torch.device:
    """Where a collective on ``t`` must run: NCCL needs CUDA tensors, gloo takes CPU ones."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: Sequence[Tensor], *, what: str = "all-reduce") -> list[Tensor]:
    """Sums over ranks of each tensor (same shapes on every rank), in float64, back in each dtype.

    Summing in float64 makes the result independent of the reduction order to well below float32
    rounding, so a float32 sum matches one process's to the bit in all but freak cases.
    """
    if not world().active or not tensors:
        return list(tensors)
    import torch.distributed as dist

    dev = _device_for(tensors[0])
    flat = torch.cat([t.detach().reshape(-1).to(dev, torch.float64) for t in tensors])
    with collective(what):
        dist.all_reduce(flat)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.device, t.dtype))
        start += t.numel()
    return out


def gather_objects(obj: T, *, what: str = "gather") -> list[T]:
    """Every rank's ``obj`` (picklable; tensors on CPU), in rank order, on every rank."""
    w = world()
    if not w.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    with collective(what):
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, *, src: int = 0, what: str = "broadcast") -> T:
    """Rank ``src``'s ``obj`` on every rank (e.g. a checkpoint only rank 0 reads)."""
    if not world().active:
        return obj
    import torch.distributed as dist

    box = [obj]
    with collective(what):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def agree(error: BaseException | None, *, what: str) -> None:
    """Raise on every rank if any rank hit an error locally (pass it, or None when all is well).

    Call at the point every rank reaches whether or not its local work failed: the first failing
    rank's error is re-raised everywhere (its class if it is an adacal error), naming the rank.
    """
    w = world()
    if not w.active:
        if error is not None:
            raise error
        return
    msg = None if error is None else (type(error).__name__, " ".join(str(error).split()))
    statuses = gather_objects(msg, what=what)
    bad = [(r, s) for r, s in enumerate(statuses) if s is not None]
    if not bad:
        return
    if error is not None:  # this rank's own error, as raised
        raise error
    rank, (kind, text) = bad[0]
    others = f" (failing ranks: {[r for r, _ in bad]})" if len(bad) > 1 else ""
    from adacal import errors

    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, AdacalError)):
        cls, text = DistributedError, f"{kind}: {text}"
    raise cls(f"{what}: rank {rank} of {w.size} failed: {text}{others}")


# --------------------------------------------------------------------------------------- checks
def _bytes(t: Tensor) -> bytes:
    """The raw bytes of a tensor's values (any dtype, any shape, scalars included)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint_model(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not isinstance(t, Tensor):
            continue
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(_bytes(t))
    return h.hexdigest()[:16]


def fingerprint_tensors(values: Sequence[Any]) -> str:
    """A hash of a list of tensors (or tuples/dicts of them): the data every rank must share."""
    from adacal import inputs

    h = hashlib.sha256()
    for v in values:
        for t in inputs.leaves(v):
            h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(_bytes(t))
    return h.hexdigest()[:16]


def check_same(value: str, *, what: str, fix: str) -> None:
    """Fail on every rank, naming those that differ from rank 0, unless all ranks pass the same ``value``."""
    w = world()
    if not w.active:
        return
    seen = gather_objects(value, what=f"checking the {what}")
    odd = [r for r, v in enumerate(seen) if v != seen[0]]
    if odd:
        raise DistributedError(f"the {what} differs across ranks: rank(s) {odd} do not match rank 0 "
                               f"(fingerprints {seen}); {fix}")


def check_same_model(model: nn.Module, *, what: str = "model") -> None:
    """Every rank must hold the same weights (a hash compared at start), else a clear error on all."""
    if world().active:
        check_same(fingerprint_model(model), what=what,
                   fix="load the same weights on every rank (same file, same seed) before converting")


# --------------------------------------------------------------------------------------- sharding
def shard_indices(n: int, w: World | None = None) -> list[int]:
    """This rank's share of ``range(n)``: every ``size``-th index from ``rank`` (no padding)."""
    w = w or world()
    return list(range(w.rank, n, w.size))


def deal(items: Sequence[T], w: World | None = None) -> list[T]:
    """Round-robin share of ``items`` for this rank (item i goes to rank i % size)."""
    return [items[i] for i in shard_indices(len(items), w)]


def shard_samples(n: int, w: World | None = None) -> tuple[int, int]:
    """This rank's contiguous ``(start, length)`` of ``n`` samples, sizes differing by at most one."""
    w = w or world()
    base, extra = divmod(n, w.size)
    start = w.rank * base + min(w.rank, extra)
    return start, base + (1 if w.rank < extra else 0)


class ShardSampler(Sampler[int]):
    """Like ``DistributedSampler(shuffle=False)`` but without padding: each sample is seen by exactly
    one rank, so summed counts and torchmetrics' synced states equal one process's."""

    def __init__(self, dataset: Dataset[Any] | int, w: World | None = None) -> None:
        self.n = dataset if isinstance(dataset, int) else len(dataset)  # type: ignore[arg-type]
        self.indices = shard_indices(self.n, w)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def reduce_counts(counts: Mapping[str, Tensor], *numbers: float) -> tuple[dict[str, Tensor], list[float]]:
    """Sum per-neuron spike counts and plain numbers (samples, steps) over ranks."""
    names = list(counts)
    extra = torch.tensor([float(x) for x in numbers], dtype=torch.float64)
    summed = all_reduce_sum([counts[k] for k in names] + [extra], what="summing evaluation counts")
    return dict(zip(names, summed[:-1])), [float(v) for v in summed[-1]]


def check_ranks(model: nn.Module, batches: Sequence[Any]) -> None:
    """At the start of a conversion: every rank holds the same model and the same calibration batches
    (adacal shards them itself), else a clear error on every rank."""
    if not world().active:
        return
    check_same_model(model)
    check_same(fingerprint_tensors(batches), what="calibration data",
               fix="pass every rank the same calibration loader (unsharded, same order); adacal splits it")
