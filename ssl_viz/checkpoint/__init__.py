"""Checkpoints: safetensors + JSON model card, and import of foreign layouts.

A run directory (or a shipped model in ``models/``) holds::

    config.json               TrainConfig (ssl_viz.config)
    card.json                 method, encoder, data, steps, metrics, versions, command
    checkpoint.safetensors    the method's state_dict (encoder, heads, queues, ...)
    trainer_state.pt          optimiser + loop state for resuming (weights_only=True)

:func:`load_model` turns any of these into a :class:`LoadedModel` (eval mode,
read-only), and so does a foreign checkpoint file: torchvision, MoCo
(``module.encoder_q.``), SwAV (``module.``), DINO (``teacher``/``student`` +
``backbone.``), lightly and solo-learn (``state_dict`` + ``backbone.``) layouts
are recognised (also under ``torch.compile``'s ``_orig_mod.``), mapped, and reported (missing /
unexpected keys); a file that leaves encoder tensors missing is refused unless a partial load is
allowed. Torch files are read with ``weights_only=True``, DINO's ``argparse.Namespace`` the only
class allowed besides tensors and plain containers.
A model card may also name ``"source": "imagenet:mobilenet_v2"``: the ImageNet
reference is then built from torchvision weights found offline.

* :mod:`ssl_viz.checkpoint.run` - save / ship / load run directories, list shipped models, :func:`load_model`.
* :mod:`ssl_viz.checkpoint.foreign` - foreign key layouts and the ImageNet references.
* :mod:`ssl_viz.checkpoint.tensors` - reading and writing tensor files safely.
* :mod:`ssl_viz.checkpoint.report` - :class:`LoadedModel`, :class:`LoadReport`, :class:`FitReport`, :class:`CheckpointError`.

The file names (``CHECKPOINT``, ``CARD``, ``CONFIG``, ``TRAINER_STATE``) are :mod:`ssl_viz.rundir`'s, re-exported here.
"""

from ssl_viz.checkpoint.foreign import (
    COUNTERS,
    FOREIGN_PREFIXES,
    MAX_WIDTH,
    RESNET_CHILDREN,
    infer_in_channels,
    load_foreign,
    load_imagenet_reference,
    partial_load_message,
    sequential_to_named,
    strip_prefixes,
)
from ssl_viz.checkpoint.report import CheckpointError, FitReport, LoadedModel, LoadReport, check_finite, fit_report
from ssl_viz.checkpoint.run import (
    SHIPPED_PREFIXES,
    is_model_dir,
    library_versions,
    list_models,
    load_model,
    load_run,
    load_trainer_state,
    save_run,
    ship_run,
)
from ssl_viz.checkpoint.tensors import (
    COMPILE_PREFIX,
    NESTED_KEYS,
    SAFE_CONTAINERS,
    drop_compile_prefix,
    read_state_dict,
    save_state,
    unwrap_state_dict,
)
from ssl_viz.rundir import CARD, CHECKPOINT, CONFIG, TRAINER_STATE

__all__ = [
    "CARD", "CHECKPOINT", "COMPILE_PREFIX", "CONFIG", "COUNTERS", "FOREIGN_PREFIXES", "MAX_WIDTH", "NESTED_KEYS",
    "RESNET_CHILDREN", "SAFE_CONTAINERS", "SHIPPED_PREFIXES", "TRAINER_STATE",
    "CheckpointError", "FitReport", "LoadReport", "LoadedModel", "check_finite", "drop_compile_prefix", "fit_report",
    "infer_in_channels", "is_model_dir", "library_versions", "list_models", "load_foreign", "load_imagenet_reference",
    "load_model", "load_run", "load_trainer_state", "partial_load_message", "read_state_dict", "save_run", "save_state",
    "sequential_to_named", "ship_run", "strip_prefixes", "unwrap_state_dict",
]
