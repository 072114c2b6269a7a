"""Optimisers of the loop: AdamW, SGD with Nesterov momentum, and LARS (You et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ssl_viz.train.base import TrainingError

OPTIMIZERS = ("adamw", "sgd", "lars")


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, "Large Batch Training of Convolutional Networks"),
    as SimCLR and BYOL use it: SGD with momentum whose step for each weight tensor is scaled by its trust ratio.

    For a parameter ``w`` (any shape) with gradient ``g``, weight decay ``wd``, momentum ``mu``::

        u     = g + wd * w
        ratio = eta * ||w|| / ||u||   (1 when ||w|| or ||u|| is 0)
        buf   = mu * buf + ratio * u        # buf starts at 0
        w     = w - lr * buf

    With ``exclude_bias_and_norm`` (default) parameters with ``ndim <= 1`` (biases, BatchNorm / LayerNorm
    weights) get neither weight decay nor the trust ratio: ``u = g``, ``ratio = 1`` (plain SGD with momentum),
    as in SimCLR and BYOL. ``lr`` multiplies outside the momentum buffer, as in :class:`torch.optim.SGD`, so a
    learning-rate schedule takes effect at once. Norms are Frobenius norms over the whole tensor. The ratio's
    denominator ``||g + wd w||`` is SimCLR's; the paper (Algorithm 1) writes ``||g|| + wd ||w||``.

    Args:
        params: parameters or parameter groups (a group may set its own ``lr``, ``weight_decay``, ...).
        lr: learning rate (SimCLR: 0.3 x batch / 256).
        momentum: ``mu``, 0.9 in SimCLR and BYOL.
        weight_decay: ``wd`` (SimCLR: 1e-6, BYOL: 1.5e-6).
        eta: trust coefficient (0.001 in SimCLR and BYOL).
        exclude_bias_and_norm: skip weight decay and adaptation for ``ndim <= 1`` parameters.

    Raises:
        ValueError: a negative ``lr``, ``momentum``, ``weight_decay`` or ``eta``.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 exclude_bias_and_norm: bool = True) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("eta", eta)):
            if value < 0:
                raise ValueError(f"LARS needs {name} >= 0, got {value}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, exclude_bias_and_norm=exclude_bias_and_norm)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not (group["exclude_bias_and_norm"] and p.ndim <= 1):
                    if group["weight_decay"]:
                        update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm))
                    update = update.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(name: str, groups: list[dict], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over parameter ``groups`` (each with its ``weight_decay``).

    * ``adamw``: betas (0.9, 0.95), fused on CPU and CUDA (one kernel for all parameters).
    * ``sgd``: momentum 0.9, Nesterov.
    * ``lars``: :class:`LARS`, momentum 0.9, eta 0.001, biases and norm weights excluded.

    Raises:
        TrainingError: an unknown ``name``.
    """
    if name == "adamw":
        fused = device.type in ("cpu", "cuda")  # one fused kernel for all parameters instead of a loop over them
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=0.9)
    raise TrainingError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS[:-1])} or {OPTIMIZERS[-1]}")
