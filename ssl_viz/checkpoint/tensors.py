"""Tensor files: write ``checkpoint.safetensors`` atomically; read safetensors or torch files safely (``weights_only``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ssl_viz.checkpoint.report import CheckpointError
from ssl_viz.fileio import atomic_write
from ssl_viz.rundir import CHECKPOINT

NESTED_KEYS = ("state_dict", "model", "teacher", "student", "online_network", "module")
# The only Python class a torch checkpoint may hold besides tensors and plain containers: DINO's training
# checkpoints store their command line (``"args": argparse.Namespace(...)``). Its values must be plain too.
SAFE_CONTAINERS = [argparse.Namespace]
# Allowed once for the process, not in a ``safe_globals`` context: that context swaps a process-wide list, which
# concurrent loads (browser sessions) could undo for each other.
torch.serialization.add_safe_globals(SAFE_CONTAINERS)
COMPILE_PREFIX = "_orig_mod."  # torch.compile's wrapper inserts it before the compiled module's keys


def save_state(run_dir: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Atomically write ``state`` as ``checkpoint.safetensors`` (tensors copied to the CPU)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata={"format": "ssl-viz"}))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then its JSON header ``{...``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch file (``weights_only=True``), nested dicts unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path.name} is not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # SAFE_CONTAINERS allowed (DINO's argparse.Namespace)
    except Exception as exc:
        raise CheckpointError(f"{path.name} cannot be loaded safely as weights (weights_only=True): {_torch_load_reason(exc)}; "
                              "ssl-viz never runs code from a checkpoint") from exc
    return unwrap_state_dict(obj)


def _torch_load_reason(exc: Exception) -> str:
    """The specific part of a torch.load error (torch's own text also suggests weights_only=False: not for us)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it needs the Python object {found.group(1)}, which is not a tensor or container"
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return f"not a plain weights file ({' '.join(text.split())[:160] or 'unsupported content'})"
    return " ".join((text.splitlines() or [type(exc).__name__])[0].split())[:200] or type(exc).__name__


def drop_compile_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Keys of a ``torch.compile``-d module without its ``_orig_mod.`` (at any depth); returns (state, whether any had it)."""
    if not any(COMPILE_PREFIX in k for k in state):
        return state, False
    return {k.replace(COMPILE_PREFIX, ""): v for k, v in state.items()}, True


def unwrap_state_dict(obj, prefer: str = "teacher", depth: int = 0) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint object (``state_dict``, ``model``, DINO ``teacher``...)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if depth > 8:
        raise CheckpointError("no state dict found in checkpoint (dicts nested too deep)")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) >= max(1, len(obj) // 2):
        return tensors
    keys = [prefer] + [k for k in NESTED_KEYS if k != prefer]
    for key in keys:
        if isinstance(obj.get(key), dict):
            return unwrap_state_dict(obj[key], prefer, depth + 1)
    raise CheckpointError(f"no state dict found in checkpoint (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
