"""When a run stops, decided once and shared by every process: time budget, divergence, cancel.

Under ``torchrun`` each rank has its own clock, its own loss and its own signal handler. If each
decided alone, one rank would leave the loop while the other waits in a collective it never joins
(a run with a time budget hung at 97 % of it). So every step, before the optimiser's update, the
ranks exchange one small tensor (``all_reduce``, sum) holding

* whether the step's loss (or gradient norm, or a checkpoint's weights) is non-finite on this rank,
* whether this rank was asked to stop (SIGTERM: cancel),
* whether writing a checkpoint failed on this rank (rank 0 writes them; e.g. a full disk),
* rank 0's seconds of training (the other ranks contribute 0), the one clock every rank obeys,

and all of them act on the same numbers: all skip the update and stop as diverged, or all finish
the step and stop as cancelled or out of time. On one process the same rules run without the
exchange. The learning-rate schedule and the estimated total steps read the shared clock too, so
the ranks' weights stay equal under a time budget.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class StopControl:
    """The stop decision of a run, shared across ranks.

    Args:
        time_budget: seconds of training (None: the run ends by step count, not here).
        distributed: whether a process group is up (then :meth:`sync` is a collective every rank must call).

    Attributes:
        elapsed: the shared clock, rank 0's seconds of training at the last :meth:`sync`.
        reason: None while the run goes on; ``"cancelled"`` or ``"time budget"`` once every rank agreed to stop.
        failed: whether some rank reported a failure at the last :meth:`sync` (every rank then stops as failed).
    """

    def __init__(self, time_budget: float | None, distributed: bool = False, elapsed: float = 0.0) -> None:
        self.time_budget, self.distributed = time_budget, distributed
        self.elapsed = float(elapsed)
        self.reason: str | None = None
        self.requested = False
        self.failed = False

    def request(self) -> None:
        """Ask to stop after the current step (a SIGTERM handler calls this; safe at any moment)."""
        self.requested = True

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def sync(self, local_elapsed: float, rank: int, nonfinite: bool, failed: bool = False) -> bool:
        """Exchange this rank's view (its clock if rank 0, whether its step went non-finite, whether it was asked
        to stop, whether it failed) and decide; returns True when the step went non-finite on *any* rank (then no
        rank updates). Sets :attr:`failed` when any rank failed."""
        values = [float(nonfinite), float(self.requested), float(failed), float(local_elapsed) if rank == 0 else 0.0]
        if self.distributed:
            t = torch.tensor(values, dtype=torch.float64, device=self._device())
            dist.all_reduce(t)
            values = t.tolist()
        any_nonfinite, any_requested, self.failed, self.elapsed = values[0] > 0, values[1] > 0, values[2] > 0, values[3]
        if any_requested:
            self.reason = "cancelled"
        elif self.time_budget and self.elapsed >= self.time_budget:
            self.reason = "time budget"
        return any_nonfinite

    def progress(self) -> float:
        """Share of the time budget spent, by the shared clock, in [0, 1]."""
        return min(1.0, self.elapsed / self.time_budget) if self.time_budget else 0.0

    def estimate_total(self, step: int) -> int:
        """Steps the whole time budget will hold at the pace so far (at least ``step``)."""
        if not self.time_budget or self.elapsed <= 0 or step <= 0:
            return step
        return max(step, math.ceil(step * self.time_budget / self.elapsed))


def nonfinite_text(value: float | None, what: str | None, kept: str | None, step: int) -> str:
    """Why a run diverged, in words: ``"loss became nan at step 12"`` (``what`` is ``"loss"`` or ``"grad_norm"``
    with its ``value``), a checkpoint's tensor that is not finite (``kept``), or another rank's finding."""
    if what:
        return f"{'loss' if what == 'loss' else 'gradient norm'} became {value} at step {step}"
    if kept:
        return f"{kept} at step {step}; the last good checkpoint is kept"
    return f"a loss, gradient or weight became non-finite on another process at step {step}"
