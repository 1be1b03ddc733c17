"""Several processes on one job: which one this process is, and the few collective steps that a
job run outside Lightning's Trainer (the dictionary build) takes with its peers.

Training needs none of this: Lightning's DDP strategy starts and joins the processes
(``trainer.strategy=ddp``). The dictionary build joins the processes that ``torchrun`` started
(or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), or
uses the process group that the caller initialised. Its collectives carry only small Python
objects (errors, cluster assignments), so they go over gloo whatever the device.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch.distributed as dist

from deconfound.errors import DeconfoundError

T = TypeVar("T")

_JOINS = itertools.count()  # how many groups this process has joined (as many in each process)

TIMEOUT = timedelta(hours=12)
"""How long a process waits for its peers at a collective step: a peer that is still embedding
a larger share of the images is slow, not dead (torchrun stops every process when one dies)."""


def global_rank() -> int:
    """This process's rank among all the job's processes: the process group's when there is one,
    else what Lightning knows (set by a Trainer's strategy, or read from the launcher's
    ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID``); 0 for a process alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


@dataclass(frozen=True)
class Peers:
    """The processes that run one job together, as process ``rank`` of ``world`` sees them.

    ``local_rank`` numbers the processes of one node (which GPU is this process's); ``group``
    is the process group of the collectives (None: the default one).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: Any = None

    @property
    def alone(self) -> bool:
        return self.world == 1

    @contextmanager
    def together(self) -> Iterator[None]:
        """A block that every process leaves only when all have finished it; when one fails in
        it, the others raise too (naming it) instead of waiting for it forever."""
        try:
            yield
        except BaseException as e:
            self._exchange(_describe(e))
            raise
        failed = [(r, m) for r, m in enumerate(self._exchange(None)) if m is not None]
        if failed:
            rank, message = failed[0]
            raise DeconfoundError(f"process {rank} of {self.world} failed: {message}")

    def from_rank_zero(self, make: Callable[[], T]) -> T:
        """``make()`` in process 0, and its result in every process (process 0's error, if it
        fails, in every process)."""
        if self.alone:
            return make()
        box: list[Any] = [None]
        if self.rank == 0:
            try:
                box = [(None, make())]
            except BaseException as e:
                dist.broadcast_object_list([(_describe(e), None)], src=0, group=self.group)
                raise
        dist.broadcast_object_list(box, src=0, group=self.group)
        error, value = box[0]
        if error is not None:
            raise DeconfoundError(f"process 0 of {self.world} failed: {error}")
        return value

    def _exchange(self, message: str | None) -> list[str | None]:
        if self.alone:
            return [message]
        messages: list[str | None] = [None] * self.world
        dist.all_gather_object(messages, message, group=self.group)
        return messages


ALONE = Peers()
"""A process on its own."""


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text and isinstance(e, DeconfoundError) else f"{type(e).__name__}: {e}"


@contextmanager
def join_peers() -> Iterator[Peers]:
    """This job's processes for the time of the block.

    Those of an initialised process group (its collectives over a gloo group made for the
    block when its own backend is another); or those that the environment describes
    (``WORLD_SIZE`` > 1 and ``RANK``, as torchrun sets them), joined over gloo for the block;
    or this process alone.
    """
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world == 1:
            yield Peers()
            return
        rank = dist.get_rank()
        gloo = dist.get_backend() != "gloo"
        group = dist.new_group(backend="gloo", timeout=TIMEOUT) if gloo else None
        try:
            yield Peers(rank, world, _local_rank(rank), group)
        finally:
            if group is not None:
                dist.destroy_process_group(group)
        return
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        yield Peers()
        return
    rank = int(os.environ["RANK"])
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DeconfoundError(
            f"WORLD_SIZE={world} and RANK={rank} are set but not {' and '.join(missing)}; "
            "start the processes with torchrun, or set every one of them"
        )
    if not dist.is_available():
        raise DeconfoundError("this build of PyTorch has no torch.distributed")
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=TIMEOUT))
    # keys of its own in the launcher's store: a process group made there later (Lightning's)
    # must not find this one's addresses under its own keys
    store = dist.PrefixStore(f"deconfound-peers-{next(_JOINS)}", store)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        yield Peers(rank, world, _local_rank(rank))
    finally:
        dist.destroy_process_group()


def _local_rank(rank: int) -> int:
    local = os.environ.get("LOCAL_RANK")
    return int(local) if local else rank
