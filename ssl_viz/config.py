"""Configuration: frozen dataclasses, defaults in exactly this one place.

Widgets and CLI flags build these; every run saves them as JSON next to its
checkpoint (``config.json``), and :func:`from_dict` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """One augmentation policy, named by the survey's taxonomy.

    Probabilities are per view; strengths follow SimCLR's conventions
    (colour jitter strength s gives brightness/contrast/saturation 0.8 s, hue 0.2 s).
    """

    # geometric
    crop_scale: tuple[float, float] = (0.2, 1.0)   # random resized crop area range; (1, 1) disables
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5                            # horizontal flip
    rotation_degrees: float = 0.0                  # free rotation, uniform in [-d, d]
    rotate90_p: float = 0.0                        # rotate by a random multiple of 90 degrees
    # colour
    jitter_p: float = 0.8
    jitter_strength: float = 0.5
    grayscale_p: float = 0.2                       # colour drop
    # blur / solarize
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5                # solarize inverts pixels >= this (BYOL: 0.5)
    # context
    jigsaw_grid: int = 0                           # 0 off; g shuffles a g x g grid of patches
    jigsaw_p: float = 0.0
    cutout_p: float = 0.0
    cutout_scale: tuple[float, float] = (0.02, 0.25)
    # view geometry
    out_size: int | None = None                    # output side; None keeps the input size


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters of the SSL methods; each method reads the ones it needs."""

    proj_dim: int = 128
    proj_hidden: int = 512
    temperature: float = 0.2            # InfoNCE / NT-Xent tau
    debiased_tau_plus: float = 0.0      # Chuang et al. 2020 class prior; 0 disables
    # MoCo
    queue_size: int = 4096
    momentum: float = 0.99              # key / target encoder EMA
    symmetric: bool = True
    # memory bank (InstDisc)
    bank_momentum: float = 0.5
    bank_loss: str = "infonce"          # "nce" or "infonce"
    nce_negatives: int = 4096
    # SwAV
    n_prototypes: int = 100
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    swav_queue_size: int = 0
    freeze_prototypes_steps: int = 100
    # BYOL
    predictor_hidden: int = 512
    predictor_lr_scale: float = 1.0     # the predictor's lr / the rest's (SimSiam, Chen & He 2021, trains it at a fixed lr)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as the run's ``config.json``.

    ``image_size``: the side, in pixels, the images are trained at. For ``folder:PATH`` datasets it is the folder's
    ``size`` load option (short side resized, centre crop; None: the folder's default, 64 px), used alike for the
    training images and the kNN monitor's held-out ones. Built-in and standard-format datasets (``digits`` 8 px,
    ``fashion-mnist`` 28, ``cifar10`` 32, ``stl10`` 96, ...) have one fixed size: a different ``image_size`` is
    refused with one sentence rather than resized, as upsampling adds no detail and only costs compute; their own
    size is accepted. Old ``config.json`` files without the key load with None.
    """

    # The defaults are the recipe tuned for time to quality on a laptop CPU (bench/recipe_search.py,
    # bench/RESULTS.md): a 4-block CNN of width 16, AdamW at a high peak lr, the "simclr-small" policy.
    method: str = "simclr"
    encoder: str = "small-cnn"
    encoder_width: int = 16             # base width for the CIFAR-style ResNet / small CNN
    dataset: str = "fashion-mnist"
    dataset_label: str | None = None    # relabel by a factor (for kNN monitoring)
    image_size: int | None = None       # side in px, 8..1024; None: the dataset's own (a folder's default 64), see below
    augment: str = "simclr-small"       # policy name or spec, see ssl_viz.augment.parse_policy
    small_crops: int = 0                # multi-crop (Caron et al. 2020): extra small views per image (simclr, swav)
    small_crop_size: int | None = None  # their side in px; None: 96/224 of the large views'
    small_crop_scale: tuple[float, float] = (0.05, 0.14)  # their crop area range (SwAV's ImageNet one)
    epochs: float = 1.0
    time_budget: float | None = None    # seconds; when set it overrides epochs
    batch_size: int = 128               # with lr 6e-3: beat 256 / 8e-3 at 120 s and 300 s (bench/RESULTS.md, recipe search)
    optimizer: str = "adamw"            # "adamw", "sgd" or "lars"
    lr: float = 6e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    grad_clip: float = 3.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True                    # bf16 autocast on CUDA
    channels_last: bool = True          # NHWC: about 1.25x faster SimCLR steps on a 2-core CPU too
    compile: bool = False
    log_every: int = 10
    knn_every: int = 200                # steps between kNN monitor evaluations; 0 disables
    knn_every_s: float = 0.0            # also every this many seconds (at most 20 % of the time); 0: steps only. The Train page uses 3
    knn_samples: int = 2000
    checkpoint_every: float = 60.0      # seconds between checkpoints
    max_train_images: int | None = None
    method_cfg: MethodConfig = field(default_factory=MethodConfig)


# Each method's own recipe for the 300 s CPU target (bench/recipe_search.py, bench/RESULTS.md "Recipe search"): the
# TrainConfig fields and the MethodConfig fields ("method_cfg") it changes from the defaults above, SimCLR's recipe.
# Figures: full-protocol kNN on Fashion-MNIST, 2 CPU cores, in the 120 s screens (methods120, methods120b); each preset
# was then trained 300 s by the zoo (bench/results/recipe-search-presets300.jsonl).
_SCREENED = {"batch_size": 128, "lr": 6e-3}  # the batch and lr the methods were screened at
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "simclr": {},
    # The previous default recipe (batch 256, lr 8e-3; t 0.2, bank momentum 0.5): 0.820 at 300 s. The 120 s screen's best
    # (batch 128, t 0.1, the entry replaced by the latest embedding as in Sec. 3.1's v_i <- f_i: 0.765 against 0.716)
    # read 0.810 at 300 s: a bank refreshed once an epoch needs the epochs more than the steps.
    "memory_bank": {"batch_size": 256, "lr": 8e-3},
    "moco": {**_SCREENED, "method_cfg": {"temperature": 0.1}},                     # 0.840 (0.839 at t 0.2)
    "swav": {**_SCREENED, "method_cfg": {"temperature": 0.1, "n_prototypes": 300}},  # 0.843 (0.837 at t 0.2, 100 prototypes)
    # the predictor at 10x the lr (SimSiam's lesson) and a faster target EMA: 0.833 (0.814 at 1x, 0.99)
    "byol": {**_SCREENED, "method_cfg": {"predictor_lr_scale": 10.0, "momentum": 0.96}},
    "supervised": {},
}


def method_preset(method: str, **changes: Any) -> TrainConfig:
    """The TrainConfig to train ``method`` with: the defaults, then the method's :data:`METHOD_PRESETS` entry, then
    ``changes`` (TrainConfig fields; ``method_cfg`` may be a dict of MethodConfig fields, merged into the preset's).

    A method without a preset (a name not in :data:`METHOD_PRESETS`) gets the defaults, so an unknown name is left to
    the validation that names the known ones.
    """
    preset = {**METHOD_PRESETS.get(method, {})}
    method_changes = {**preset.pop("method_cfg", {})}
    extra = changes.pop("method_cfg", None)
    if isinstance(extra, MethodConfig):
        extra = dataclasses.asdict(extra)
    method_changes.update(extra or {})
    base = TrainConfig()
    return dataclasses.replace(base, **{**preset, **changes, "method": method},
                               method_cfg=dataclasses.replace(base.method_cfg, **method_changes))


# Peak AdamW learning rates that train stably with batch 256 (TrainConfig's own lr, 6e-3, goes with its batch of 128).
SUGGESTED_LR = {"small-cnn": 8e-3, "small-cnn-k7": 8e-3, "resnet18-cifar": 4e-3, "vit-tiny": 1e-3}


def suggested_lr(encoder: str) -> float:
    """A peak learning rate that suits ``encoder`` (transformers and large ImageNet bodies want smaller ones)."""
    return SUGGESTED_LR.get(encoder, 2e-3)


IMAGE_SIZES = (32, 64, 96, 128, 224)   # the sizes the Train page offers and :func:`suggested_recipe` was measured at


@dataclass(frozen=True)
class Recipe:
    """What to train at one image size on one kind of device, and why.

    Attributes:
        encoder: a name of :data:`ssl_viz.encoders.ENCODERS`.
        encoder_width: base width of ``small-cnn`` / ``resnet18-cifar`` (TrainConfig's 16 for the torchvision
            bodies, which have their own widths).
        batch_size: images per step; lr: peak AdamW learning rate (:func:`suggested_lr` of the encoder). None in the
            bands of the default recipe: :func:`suggested_recipe` fills in the method's preset.
        reason: one clause, lower case and without a full stop, for "For 96 px images on the CPU: ... — reason".
    """

    encoder: str
    encoder_width: int
    batch_size: int | None
    lr: float | None
    reason: str


# (largest side of the band, recipe); a size falls in the first band whose top it does not exceed (the tops are the
# midpoints between the measured sizes, so a size takes the nearest one's recipe). The CPU recipes come from
# bench/image_sizes.py (SimCLR steps, batch 32, images/s per core and the memory a step adds; bench/RESULTS.md,
# "Image sizes (CPU)"), with batches kept to about 2 GB a step; the CUDA ones are the literature's usual recipes.
_CPU_RECIPES = (
    (48, Recipe("small-cnn", 16, None, None,  # the default recipe: the method's preset's batch and lr
                "the small CNN trained 800 images/s per core at 32 px, 5x any other encoder measured; smaller batches beat "
                "256 in 300 s on Fashion-MNIST (more steps at the same images/s)")),
    (80, Recipe("small-cnn", 16, None, None,
                "the small CNN trained 230 images/s per core at 64 px, 4x any other encoder measured; the default batch "
                "(measured best at 28 px in a time budget, not at 64) adds about 0.55 GB")),
    (112, Recipe("resnet18", 16, 64, 2e-3,
                 "the small CNN is 4x faster but sees only 17 px at a time, and resnet18's ImageNet stem trained 24 images/s per "
                 "core at 96 px, faster than resnet18-cifar at half mobilenet_v2's memory; batch 64 adds about 1.1 GB")),
    (176, Recipe("resnet18", 16, 64, 2e-3,
                 "the small CNN is 4x faster but sees only 17 px at a time, and resnet18's ImageNet stem trained 15 images/s per "
                 "core at 128 px with less than half mobilenet_v2's memory; batch 64 adds about 1.7 GB")),
    (None, Recipe("resnet18", 16, 32, 2e-3,
                  "resnet18 was the fastest deep encoder measured at 224 px (5.7 images/s per core, mobilenet_v2 4.2, "
                  "resnet18-cifar 3.2), the small CNN sees only 17 px of it, and batch 32 adds about 2 GB")),
)
_CUDA_RECIPES = (
    (80, Recipe("resnet18-cifar", 64, 512, SUGGESTED_LR["resnet18-cifar"],
                "the literature's usual GPU recipe for small images, not measured here: SimCLR's CIFAR-10 set-up, a CIFAR-stem "
                "ResNet-18 at batch 512")),
    (176, Recipe("resnet18", 16, 256, 2e-3,
                 "the literature's usual GPU recipe for 96-128 px (STL-10), not measured here: an ImageNet-stem ResNet-18 at "
                 "batch 256")),
    (None, Recipe("resnet50", 16, 256, 2e-3,
                  "the literature's usual GPU recipe for 224 px (SimCLR and MoCo on ImageNet), not measured here: ResNet-50 at "
                  "batch 256, or resnet18 where memory is short")),
)


def suggested_recipe(image_size: int, device: str, method: str = TrainConfig.method) -> Recipe:
    """The encoder, width, batch size and peak lr to train ``image_size`` px images with on ``device``.

    Sizes between the measured ones (32, 64, 96, 128, 224) take the nearest band's recipe; ``device`` is "cpu",
    "cuda" (also "cuda:1"), or "auto"/"mps" (treated as a GPU when it starts with "cuda", else as the CPU).
    The CPU figures are measured (bench/image_sizes.py); the CUDA ones are the literature's and say so. In the bands of
    the default recipe (the small CNN on the CPU up to 64 px) the batch and lr are ``method``'s :func:`method_preset`.
    """
    size = int(image_size)
    bands = _CUDA_RECIPES if str(device).startswith("cuda") else _CPU_RECIPES
    recipe = next(recipe for top, recipe in bands if top is None or size <= top)
    if recipe.batch_size is None:
        preset = method_preset(method)
        recipe = dataclasses.replace(recipe, batch_size=preset.batch_size, lr=preset.lr)
    return recipe


def to_dict(cfg: Any) -> dict:
    """A dataclass tree as plain JSON-able dicts."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Build dataclass ``cls`` from a dict, ignoring unknown keys, converting nested ones."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, dict) and dataclasses.is_dataclass(f.default_factory):  # nested config, e.g. method_cfg
            value = from_dict(f.default_factory, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def save_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
