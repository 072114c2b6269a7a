"""Training: the one loop for every method (:class:`Trainer`), its callbacks and optimisers.

* :mod:`ssl_viz.train.trainer` - :class:`Trainer` (``Trainer(method, data, augment, run_dir, cfg)`` or
  ``Trainer.from_config(cfg, run_dir)``), :func:`lr_factor`.
* :mod:`ssl_viz.train.run` - :func:`train` (what ``python -m ssl_viz train`` runs), :func:`load_config`.
* :mod:`ssl_viz.train.stop` - :class:`StopControl`: time budget, divergence and cancel decided once for all ranks.
* :mod:`ssl_viz.train.checkpoints` - only weights that produced a finite loss are written.
* :mod:`ssl_viz.train.callbacks` - metrics/status files, kNN monitor, checkpoints, progress bar, embedding snapshots.
* :mod:`ssl_viz.train.optim` - AdamW, SGD and :class:`LARS`.
* :mod:`ssl_viz.train.base` - :class:`TrainState`, :class:`Callback`, :class:`TrainingError`, :func:`check_trainable`.

Device choice and run files live below this layer (:mod:`ssl_viz.device`, :mod:`ssl_viz.rundir`);
``pick_device``, ``read_metrics`` and ``append_metrics`` are re-exported here for older imports.
"""

from ssl_viz.device import configure_backend, device_name, pick_device
from ssl_viz.rundir import METRICS, STATUS, append_metrics, read_metrics
from ssl_viz.train.base import Callback, TrainerView, TrainingError, TrainState, check_trainable
from ssl_viz.train.callbacks import (
    Checkpointer,
    EvolutionRecorder,
    KnnMonitor,
    MetricsLog,
    ProgressBar,
    default_callbacks,
    mark_stopped,
    status_record,
)
from ssl_viz.train.optim import LARS, OPTIMIZERS, build_optimizer
from ssl_viz.train.run import load_config, train
from ssl_viz.train.stop import StopControl
from ssl_viz.train.trainer import Trainer, lr_factor

__all__ = [
    "LARS", "METRICS", "OPTIMIZERS", "STATUS", "Callback", "Checkpointer", "EvolutionRecorder", "KnnMonitor", "MetricsLog",
    "ProgressBar", "StopControl", "TrainState", "Trainer", "TrainerView", "TrainingError", "append_metrics", "build_optimizer",
    "check_trainable", "configure_backend", "default_callbacks", "device_name", "load_config", "lr_factor", "mark_stopped",
    "pick_device", "read_metrics", "status_record", "train",
]
