"""Which pixels make an encoder see what it sees: attribution maps (captum) and ViT attention.

An SSL encoder has no class logits, so the scalar to explain is a *target*
built on the embedding (a captum ``forward_func``, images ``[B, C, H, W]`` -> ``[B]``):

* :class:`SimilarityTarget`: cosine similarity ``cos(f(x), r)`` to a reference
  embedding ``r`` (the image's own augmented view, another image, or a class
  prototype = mean normalised embedding of a class);
* :class:`ClassLogitTarget`: one class logit of a supervised model.

:func:`attribute` runs Grad-CAM (Selvaraju et al. 2017), Integrated Gradients
(Sundararajan et al. 2017), Saliency (Simonyan et al. 2014) or Occlusion
(Zeiler & Fergus 2014) and returns an ``[H, W]`` map. Gradients are taken
with respect to the *inputs* only: the (shared, cached) model is never put in
train mode, its parameters' ``requires_grad`` flags are restored, and no hook
outlives the call.

Safe under concurrency (one model shared by every browser session, each in its own thread):
Integrated Gradients, Saliency and Occlusion hook nothing; Grad-CAM (:func:`grad_cam`) hooks
per call, acting only on its own thread's forward pass.

For ViTs, :func:`vit_attention` returns the [CLS] token's attention in the last
block and :func:`attention_rollout` (Abnar & Zuidema 2020) follows attention
through all blocks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = {
    "gradcam": "Grad-CAM: ReLU(sum_k alpha_k A^k), alpha_k = mean over space of dy/dA^k",
    "integrated_gradients": "Integrated Gradients: (x - x') * mean_a dy/dx(x' + a (x - x')), black baseline x'",
    "saliency": "Saliency: max over channels of |dy/dx|",
    "occlusion": "Occlusion: y(x) - y(x with a patch set to black), patch ~ 1/4 of the image",
}
SIGNS = ("absolute", "positive", "all")


class AttributionError(ValueError):
    """An attribution cannot be computed for these inputs; the message says why."""


# ----------------------------------------------------------------------------- targets


class SimilarityTarget:
    """``x -> cos(f(x), r)``: cosine similarity of the embedding to a reference ``r`` (``[D]`` or ``[1, D]``)."""

    def __init__(self, embed_fn: Callable[[torch.Tensor], torch.Tensor], reference_embedding: torch.Tensor) -> None:
        self.embed_fn = embed_fn
        self.reference = torch.as_tensor(reference_embedding).detach().float().reshape(1, -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed_fn(x)
        return F.cosine_similarity(z, self.reference.to(z.device, z.dtype), dim=1)


class ClassLogitTarget:
    """``x -> classifier(encoder(x))[:, class_index]``: one class logit of a supervised model."""

    def __init__(self, encoder: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module, class_index: int) -> None:
        self.encoder, self.classifier, self.class_index = encoder, classifier, int(class_index)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))[:, self.class_index]


@torch.no_grad()
def embed(embed_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[N, D]`` of float images ``[N, C, H, W]`` in batches."""
    return torch.cat([embed_fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def class_prototype(embed_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Mean L2-normalised embedding ``[D]`` of one class's float images ``[N, C, H, W]``."""
    if len(images) == 0:
        raise AttributionError("the class has no images to build a prototype from")
    return F.normalize(embed(embed_fn, images), dim=1).mean(0)


TARGETS = {
    "view": "own augmented view",
    "image": "another image",
    "prototype": "class prototype",
    "logit": "class logit (supervised models)",
}


def build_target(kind: str, embed_fn: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor | None = None,
                 classifier: nn.Module | None = None, class_index: int | None = None):
    """A scalar target (captum ``forward_func``) of one of the :data:`TARGETS` kinds.

    Args:
        kind: ``"view"`` / ``"image"``: ``reference`` is one float image ``[1, C, H, W]`` (the augmented
            view, or another image) and the target is the cosine similarity to its embedding;
            ``"prototype"``: ``reference`` holds a class's images ``[N, C, H, W]``;
            ``"logit"``: ``classifier(embed_fn(x))[:, class_index]``.
        embed_fn: images -> embeddings (``LoadedModel.embed_fn(...)`` or the encoder; the encoder for logits).
    """
    if kind not in TARGETS:
        raise AttributionError(f"unknown target {kind!r}; choose one of: {', '.join(TARGETS)}")
    if kind == "logit":
        if classifier is None or class_index is None:
            raise AttributionError("a class-logit target needs a supervised model (a classifier) and a class")
        return ClassLogitTarget(embed_fn, classifier, class_index)
    if reference is None:
        raise AttributionError(f"a {TARGETS[kind]} target needs reference images")
    if kind == "prototype":
        return SimilarityTarget(embed_fn, class_prototype(embed_fn, reference))
    return SimilarityTarget(embed_fn, embed(embed_fn, reference)[0])


@torch.no_grad()
def logit_class(encoder: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module, x: torch.Tensor,
                label: int, num_classes: int) -> int:
    """Which class logit to explain for image ``x`` ``[1, C, H, W]``: its own ``label`` when the head was
    trained on this dataset's ``num_classes`` classes, else the head's predicted class (e.g. ImageNet heads)."""
    logits = classifier(encoder(x))
    if logits.shape[1] == num_classes and 0 <= label < num_classes:
        return int(label)
    return int(logits[0].argmax())


# ----------------------------------------------------------------------------- attribution


@contextlib.contextmanager
def preserved(modules: Iterable[nn.Module | None]):
    """Restore the training flag and parameters' ``requires_grad`` of ``modules`` on exit."""
    modules = [m for m in modules if isinstance(m, nn.Module)]
    training = [(m, m.training) for mod in modules for m in mod.modules()]
    flags = [(p, p.requires_grad) for mod in modules for p in mod.parameters()]
    try:
        yield
    finally:
        for m, was in training:
            m.training = was
        for p, was in flags:
            p.requires_grad_(was)


def _modules_of(forward_func) -> list[nn.Module]:
    found = [forward_func] if isinstance(forward_func, nn.Module) else []
    for attr in ("embed_fn", "encoder", "classifier"):
        obj = getattr(forward_func, attr, None)
        if isinstance(obj, nn.Module):
            found.append(obj)
    return found


def occlusion_window(height: int, width: int, fraction: float = 0.25) -> tuple[int, int]:
    """Occlusion patch side ~ ``fraction`` of the image side (at least 1 pixel)."""
    return max(1, round(height * fraction)), max(1, round(width * fraction))


def grad_cam(forward_func: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, layer: nn.Module,
             relu: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) of the scalar ``forward_func(x)`` at ``layer``: ``[B, 1, h, w]``.

    ``L = ReLU(sum_k alpha_k A^k)``, ``alpha_k = mean_{u,v} dy / dA^k_{uv}``, ``A`` ``[B, K, h, w]`` the layer's
    output (as captum's ``LayerGradCam``). ``A`` is caught by a forward hook that lives for this call only and acts
    only on this thread's forward pass (it keeps ``A`` and hands the network a copy, so in-place operations after
    the layer leave it intact): concurrent calls on one shared model do not see each other.

    Raises:
        AttributionError: the layer did not run, or its output is not a spatial map ``[B, K, h, w]``.
    """
    owner, caught = threading.get_ident(), []

    def hook(module, inputs, output):
        if threading.get_ident() != owner or caught or not isinstance(output, torch.Tensor):
            return None
        caught.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        y = forward_func(x)
    finally:
        handle.remove()
    if not caught:
        raise AttributionError("the Grad-CAM layer did not run in the forward pass (or gave no tensor)")
    a = caught[0]
    if a.ndim != 4:
        raise AttributionError(f"Grad-CAM needs a layer with a spatial map [B, C, h, w]; got {tuple(a.shape)}")
    grads = torch.autograd.grad(y.sum(), a)[0]                       # B x K x h x w
    cam = (grads.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)   # B x 1 x h x w
    return F.relu(cam) if relu else cam


def _signed(a: torch.Tensor, sign: str) -> torch.Tensor:
    if sign not in SIGNS:
        raise AttributionError(f"sign must be one of {SIGNS}, got {sign!r}")
    return a.abs() if sign == "absolute" else a.clamp_min(0) if sign == "positive" else a


def attribute(method: str, forward_func: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
              layer: nn.Module | None = None, *, n_steps: int = 32, sign: str = "absolute",
              window: int | None = None, stride: int | None = None, relu: bool = True,
              internal_batch_size: int | None = 16) -> np.ndarray:
    """Attribution map ``[H, W]`` (float32) of the scalar ``forward_func(inputs)`` for one image.

    Args:
        method: ``"gradcam"``, ``"integrated_gradients"``, ``"saliency"`` or ``"occlusion"``.
        forward_func: images ``[B, C, H, W]`` -> scalars ``[B]`` (a target above).
        inputs: one float image ``[1, C, H, W]`` in [0, 1].
        layer: Grad-CAM's conv layer (a module inside the forward path; its map is upsampled to ``H x W``).
        n_steps: Integrated Gradients' Riemann steps.
        sign: IG / occlusion channel-summed maps: ``"absolute"``, ``"positive"`` or ``"all"`` (signed).
        window, stride: occlusion patch side (default ~ H/4) and stride (default window/2).
        relu: Grad-CAM keeps positive evidence only (as in the paper).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, Occlusion, Saliency

    if method not in METHODS:
        raise AttributionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if inputs.ndim != 4 or inputs.shape[0] != 1:
        raise AttributionError(f"expected one image [1, C, H, W], got {tuple(inputs.shape)}")
    x = inputs.detach().float().clone()  # a fresh tensor outside inference mode; gradients only w.r.t. it
    _, c, h, w = x.shape
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(preserved(_modules_of(forward_func) + [layer]))
        x.requires_grad_(method != "occlusion")
        if method == "gradcam":
            if layer is None:
                raise AttributionError("Grad-CAM needs a conv layer")
            cam = grad_cam(forward_func, x, layer, relu=relu)
            out = LayerAttribution.interpolate(cam.detach(), (h, w), interpolate_mode="bilinear")[0, 0]
        elif method == "saliency":
            out = Saliency(forward_func).attribute(x, abs=True).detach()[0].amax(0)
        elif method == "integrated_gradients":
            attr = IntegratedGradients(forward_func).attribute(
                x, baselines=torch.zeros_like(x), n_steps=n_steps, internal_batch_size=internal_batch_size)
            out = _signed(attr.detach()[0].sum(0), sign)
        else:
            wh, ww = (window, window) if window else occlusion_window(h, w)
            sh, sw = (stride, stride) if stride else (max(1, wh // 2), max(1, ww // 2))
            attr = Occlusion(forward_func).attribute(
                x, sliding_window_shapes=(c, wh, ww), strides=(c, sh, sw), baselines=0.0,
                perturbations_per_eval=internal_batch_size or 1)
            out = _signed(attr.detach()[0].sum(0), sign)
    out = out.float().cpu().numpy()
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def default_gradcam_layer(encoder: nn.Module, x: torch.Tensor, min_side: int = 4) -> str:
    """The deepest conv layer whose map for ``x`` is at least ``min_side`` pixels wide (else the widest)."""
    from ssl_viz.analysis.feature_maps import capture_feature_maps
    from ssl_viz.encoders import conv_layers

    names = list(conv_layers(encoder))
    if not names:
        raise AttributionError(f"{getattr(encoder, 'name', 'this encoder')} has no conv layer for Grad-CAM")
    maps = capture_feature_maps(encoder, x[:1], names)
    sides = {n: min(maps[n].shape[-2:]) for n in names}
    wide = [n for n in names if sides[n] >= min_side]
    return wide[-1] if wide else max(names, key=lambda n: sides[n])


# ----------------------------------------------------------------------------- ViT attention


def _single(attn: torch.Tensor) -> torch.Tensor:
    """``[B, heads, T, T]`` (first image) or ``[heads, T, T]`` -> ``[heads, T, T]`` float."""
    a = torch.as_tensor(attn).detach().float().cpu()
    return a[0] if a.ndim == 4 else a


def _grid(row: torch.Tensor) -> np.ndarray:
    """Patch part of a [CLS] row ``[..., T]`` -> ``[..., g, g]``."""
    patches = row[..., 1:]
    g = int(round(patches.shape[-1] ** 0.5))
    if g * g != patches.shape[-1]:
        raise AttributionError(f"{patches.shape[-1]} patch tokens do not form a square grid")
    return patches.reshape(*patches.shape[:-1], g, g).numpy()


@torch.no_grad()
def vit_attention(encoder, x: torch.Tensor, block: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] attention to the patches in one block (default the last), for the first image of ``x``.

    Returns:
        (mean over heads ``[g, g]``, per head ``[heads, g, g]``).
    """
    attentions = encoder.attention_maps(x)
    a = _single(attentions[block])  # [heads, T, T]
    heads = _grid(a[:, 0])
    return heads.mean(0), heads


def attention_rollout(attentions: list[torch.Tensor], discard_ratio: float = 0.0, head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020), [CLS] row over the patches ``[g, g]``.

    Per block, heads are fused (mean/max/min), the weakest ``discard_ratio`` of
    the weights are dropped (never [CLS]->[CLS]), the residual connection is
    added and rows renormalised, ``Â = (A + I) / 2`` then ``Â / Â.sum(-1)``;
    blocks are chained by matrix products, ``R = Â_L ... Â_2 Â_1``.

    Args:
        attentions: per block ``[B, heads, T, T]`` (first image used) or ``[heads, T, T]``.
    """
    if not attentions:
        raise AttributionError("no attention maps to roll out")
    if not 0.0 <= discard_ratio < 1.0:
        raise AttributionError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    fuse = {"mean": lambda a: a.mean(0), "max": lambda a: a.amax(0), "min": lambda a: a.amin(0)}
    if head_fusion not in fuse:
        raise AttributionError(f"head_fusion must be one of {list(fuse)}, got {head_fusion!r}")
    t = _single(attentions[0]).shape[-1]
    eye = torch.eye(t)
    result = eye.clone()
    for attn in attentions:
        a = fuse[head_fusion](_single(attn))  # [T, T]
        if discard_ratio > 0:
            flat = a.flatten().clone()
            k = int(flat.numel() * discard_ratio)
            if k:
                idx = torch.topk(flat, k, largest=False).indices
                idx = idx[idx != 0]
                flat[idx] = 0
            a = flat.view(t, t)
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return _grid(result[0])


def augmented_view(x: torch.Tensor, policy: str = "simclr", seed: int = 0) -> torch.Tensor:
    """One augmented view of float images ``[B, C, H, W]`` under a named policy of :mod:`ssl_viz.augment` (seeded)."""
    from ssl_viz.augment import POLICIES, BatchAugment

    if policy not in POLICIES:
        raise AttributionError(f"unknown augmentation policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    generator = torch.Generator().manual_seed(int(seed))
    return BatchAugment(POLICIES[policy])(x, generator=generator)


# ----------------------------------------------------------------------------- one call per image (for pages)


@dataclass
class Explanation:
    """What :func:`explain_image` found for one image.

    Attributes:
        maps: ``{title: map}``; the attribution ``[H, W]`` first, then for ViTs the [CLS] attention
            (mean of heads), its rollout and each head (``[g, g]``).
        score: the target's value ``y`` on the image.
        class_index: the explained class (class-logit targets), else None.
    """

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    score: float = float("nan")
    class_index: int | None = None


def explain_image(model, x: torch.Tensor, kind: str, method: str, *, representation: str = "backbone",
                  reference: torch.Tensor | None = None, label: int = -1, num_classes: int = 0,
                  layer_name: str | None = None, policy: str = "simclr", seed: int = 0, n_steps: int = 16) -> Explanation:
    """Attribution map (and ViT attention) of one image ``[1, C, H, W]`` for a model with ``encoder``,
    ``classifier`` and ``embed_fn`` (a :class:`~ssl_viz.checkpoint.LoadedModel`).

    Args:
        kind: a :data:`TARGETS` key; ``"view"`` draws the image's augmented view with ``policy``/``seed``,
            ``"image"``/``"prototype"`` take ``reference`` images, ``"logit"`` explains the class
            :func:`logit_class` picks from ``label`` and ``num_classes``.
        method: a :data:`METHODS` key; Grad-CAM uses conv layer ``layer_name`` (default: :func:`default_gradcam_layer`).
    """
    from ssl_viz.encoders import conv_layers

    encoder = model.encoder
    cls = None
    if kind == "logit":
        if model.classifier is None:
            raise AttributionError(f"{getattr(model, 'name', 'this model')} has no classifier; pick a similarity target")
        cls = logit_class(encoder, model.classifier, x, label, num_classes)
        target = build_target(kind, encoder, classifier=model.classifier, class_index=cls)
    else:
        reference = augmented_view(x, policy, seed) if kind == "view" else reference
        target = build_target(kind, model.embed_fn(representation), reference)
    layer = None
    if method == "gradcam":
        convs = conv_layers(encoder)
        layer_name = layer_name if layer_name in convs else default_gradcam_layer(encoder, x)
        layer = convs[layer_name]
    out = Explanation(class_index=cls)
    out.maps[method] = attribute(method, target, x, layer=layer, n_steps=n_steps)
    with torch.no_grad():
        out.score = float(target(x)[0])
    if getattr(encoder, "is_vit", False):
        mean, heads = vit_attention(encoder, x)
        out.maps["[CLS] attention, mean of heads"] = mean
        with torch.no_grad():
            out.maps["attention rollout"] = attention_rollout(encoder.attention_maps(x))
        out.maps.update({f"head {h}": a for h, a in enumerate(heads)})
    return out
