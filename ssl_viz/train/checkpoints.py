"""Writing a run's checkpoints so that only sound weights are ever kept.

A checkpoint asked for after step ``s`` is a :func:`snapshot` held in memory; the Trainer writes it
(:func:`write_checkpoint`) during step ``s + 1``, once that step's loss, computed with exactly those
weights, is known to be finite, and drops it if the loss is NaN/inf. The final checkpoint, which no later
step can vouch for, is written only when :func:`weights_problem` finds nothing wrong. So the last
checkpoint of a run that diverged (``--lr 1e30``) always loads and embeds finite numbers.
"""

from __future__ import annotations

import torch

from ssl_viz.checkpoint import save_run
from ssl_viz.device import device_name


def nonfinite_tensor(state: dict) -> str | None:
    """``"<name> holds NaN or inf"`` for the first floating tensor of ``state`` that is not finite, else None."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{name} holds NaN or inf"
    return None


@torch.no_grad()
def weights_problem(method: torch.nn.Module, probe: torch.Tensor) -> str | None:
    """Why ``method``'s weights must not be saved, or None when they may: a parameter or buffer holding NaN/inf,
    or backbone / projection outputs of the float images ``probe`` ``[B, C, H, W]`` (eval mode) that are not finite.

    The model's training flag is restored; no collective is run (rank 0 alone may call it under DDP).
    """
    problem = nonfinite_tensor(method.state_dict())
    if problem:
        return problem
    was_training = method.training
    method.eval()
    try:
        h = method.encoder(probe)
        z = method.projector(h) if getattr(method, "projector", None) is not None else h
        if not (bool(torch.isfinite(h).all()) and bool(torch.isfinite(z).all())):
            return "the weights embed images as NaN or inf"
    finally:
        method.train(was_training)
    return None


def model_card(trainer) -> dict:
    """The model card of ``trainer`` now: what was trained on what, how long, where, and the latest monitor results."""
    cfg, data, s = trainer.cfg, trainer.data, trainer.state
    return {
        "method": cfg.method, "encoder": cfg.encoder, "dataset": cfg.dataset, "augment": cfg.augment,
        "in_channels": data.channels, "image_size": list(data.image_size), "num_samples": len(data),
        "num_classes": data.num_classes, "steps": s.step, "images_seen": s.images_seen,
        "seconds": round(s.elapsed, 1), "device": device_name(trainer.device), "world_size": trainer.world,
        "command": trainer.command, "metrics": dict(trainer.metrics),
    }


def save_checked(trainer) -> None:
    """Write ``trainer``'s checkpoint now if :func:`weights_problem` finds nothing wrong with its weights (probe: the
    first 16 training images). Raises FloatingPointError naming the problem otherwise; nothing is written."""
    probe = trainer.images[: min(16, len(trainer.images))].to(trainer.device).float().div_(255.0)
    problem = weights_problem(trainer.method, probe)
    if problem:
        raise FloatingPointError(f"{problem} after step {trainer.state.step}; the last good checkpoint is kept")
    write_checkpoint(trainer, *snapshot(trainer))


def snapshot(trainer) -> tuple[dict, dict, dict]:
    """What a checkpoint of ``trainer`` holds now: its state dict (buffers copied, since the next forward pass
    updates BatchNorm statistics in place; parameters shared, as only the optimiser's update changes them), its
    model card, and its loop counters."""
    buffers = {name for name, _ in trainer.method.named_buffers()}
    weights = {k: v.detach().clone() if k in buffers else v.detach() for k, v in trainer.method.state_dict().items()}
    s = trainer.state
    loop = {"step": s.step, "elapsed": s.elapsed, "images_seen": s.images_seen, "total_steps": s.total_steps}
    return weights, trainer.card(), loop


def write_checkpoint(trainer, weights: dict, card: dict, loop: dict) -> None:
    """Write a :func:`snapshot` with the optimiser's current state into ``trainer.run_dir`` (each file atomically)."""
    save_run(trainer.run_dir, _Weights(weights), trainer.cfg, card, {"optimizer": trainer.optimizer.state_dict(), "loop": loop})


class _Weights:
    """A state dict posing as the module :func:`~ssl_viz.checkpoint.save_run` reads it from."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state
