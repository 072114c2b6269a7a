"""Tests for ssl_viz.augment: batch augmentation, policies, torchvision v2 pipeline."""

from dataclasses import replace

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ssl_viz.augment import (
    AUGMENT_KNOBS,
    POLICIES,
    SINGLE_TRANSFORMS,
    BatchAugment,
    MultiViewAugment,
    affine_grid,
    apply_jigsaw,
    blur_kernel_size,
    color_jitter,
    colorization_view,
    describe_params,
    describe_policy,
    gaussian_blur,
    jigsaw,
    knobs_from_policy,
    parse_policy,
    policy_from_knobs,
    policy_to_spec,
    single_transform,
    v2_transform,
)
from ssl_viz.config import AugmentConfig

NONE = POLICIES["none"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 6, c: int = 3, h: int = 16, w: int | None = None, lo: float = 0.0) -> torch.Tensor:
    return lo + (1 - lo) * torch.rand(b, c, h, w or h, generator=gen(123))


# --------------------------------------------------------------------------- shapes, ranges, identity


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_policy_keeps_shape_dtype_and_range(name, channels):
    x = batch(c=channels)
    y, params = BatchAugment(POLICIES[name])(x, gen(), return_params=True)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    assert all(v.shape[0] == len(x) for v in params.values())


@pytest.mark.parametrize("channels", [1, 3])
def test_out_size_and_non_square_input(channels):
    x = batch(c=channels, h=12, w=20)
    assert BatchAugment(replace(POLICIES["simclr-strong"], out_size=10))(x, gen()).shape == (6, channels, 10, 10)
    assert BatchAugment(replace(NONE, out_size=8))(x, gen()).shape == (6, channels, 8, 8)
    assert BatchAugment(POLICIES["geometric"])(x, gen()).shape == x.shape


def test_uint8_input_is_scaled():
    x = (batch() * 255).to(torch.uint8)
    y = BatchAugment(NONE)(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x.float() / 255)


def test_identity_policy_returns_input():
    x = batch()
    torch.testing.assert_close(BatchAugment(NONE)(x, gen()), x, atol=1e-5, rtol=0)
    # the resampling path with an identity transform is (numerically) the identity too
    torch.testing.assert_close(BatchAugment(replace(NONE, flip_p=1e-9))(x, gen()), x, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- randomness


def test_same_seed_same_views_and_params():
    x = batch(b=8)
    aug = BatchAugment(replace(POLICIES["simclr-strong"], rotate90_p=0.5, solarize_p=0.5, jigsaw_grid=2, jigsaw_p=0.5,
                               cutout_p=0.5, rotation_degrees=20.0))
    y1, p1 = aug(x, gen(7), return_params=True)
    y2, p2 = aug(x, gen(7), return_params=True)
    y3 = aug(x, gen(8))
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    assert p1.keys() == p2.keys()
    for key in p1:
        assert torch.equal(p1[key], p2[key]), key
    assert not torch.allclose(y1, y3)


def test_default_generator_still_random():
    x = batch()
    aug = BatchAugment(POLICIES["simclr"])
    assert not torch.allclose(aug(x), aug(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_with_cpu_and_cuda_generators():
    x = batch().cuda()
    aug = BatchAugment(POLICIES["simclr-strong"])
    y_cpu_gen, p = aug(x, gen(3), return_params=True)
    assert y_cpu_gen.device == x.device and p["crop"].device == x.device
    y_ref = aug(x.cpu(), gen(3))
    torch.testing.assert_close(y_cpu_gen.cpu(), y_ref, atol=1e-4, rtol=0)
    cuda_gen = torch.Generator(device="cuda").manual_seed(3)
    assert aug(x, cuda_gen).device == x.device


# --------------------------------------------------------------------------- geometric


def test_rotate90_equals_torch_rot90():
    x = batch(b=24)
    y, params = BatchAugment(single_transform("rotate90"))(x, gen(), return_params=True)
    ks = params["rot90_k"]
    assert set(ks.tolist()) == {1, 2, 3}
    for i, k in enumerate(ks.tolist()):
        torch.testing.assert_close(y[i], torch.rot90(x[i], k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_flip_p1_equals_torch_flip():
    x = batch()
    y, params = BatchAugment(single_transform("flip"))(x, gen(), return_params=True)
    assert params["flip"].all()
    torch.testing.assert_close(y, torch.flip(x, dims=(-1,)), atol=1e-5, rtol=0)


def test_flip_flags_match_outputs():
    x = batch(b=32)
    y, params = BatchAugment(replace(NONE, flip_p=0.5))(x, gen(), return_params=True)
    flipped = params["flip"]
    assert 0 < flipped.sum() < len(x)
    torch.testing.assert_close(y[flipped], x[flipped].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[~flipped], x[~flipped], atol=1e-5, rtol=0)


def test_free_rotation_matches_torchvision_for_drawn_angle():
    x = batch(b=4)
    y, params = BatchAugment(replace(NONE, rotation_degrees=45.0))(x, gen(), return_params=True)
    for i, angle in enumerate(params["angle"].tolist()):
        ref = TF.rotate(x[i], angle, interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i], ref, atol=1e-4, rtol=0)


def test_crop_box_matches_output():
    """On coordinate ramps a crop's output spans the reported box."""
    h = w = 32
    xs = (torch.arange(w) + 0.5) / w
    ramps = torch.stack([xs.expand(h, w), xs[:, None].expand(h, w), torch.zeros(h, w)])[None].repeat(16, 1, 1, 1)
    y, params = BatchAugment(replace(NONE, crop_scale=(0.2, 0.8), out_size=16))(ramps, gen(), return_params=True)
    x0, y0, bw, bh = params["crop"].unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + bw <= 1 + 1e-6).all() and (y0 + bh <= 1 + 1e-6).all()
    area = bw * bh
    assert (area >= 0.2 - 1e-6).all() and (area <= 0.8 + 1e-6).all()
    tol = 1.0 / w
    torch.testing.assert_close(y[:, 0].mean((1, 2)), x0 + bw / 2, atol=tol, rtol=0)
    torch.testing.assert_close(y[:, 1].mean((1, 2)), y0 + bh / 2, atol=tol, rtol=0)
    torch.testing.assert_close(y[:, 0, 0, -1] - y[:, 0, 0, 0], bw * 15 / 16, atol=tol, rtol=0)


# --------------------------------------------------------------------------- colour


def test_grayscale_p1_equal_channels():
    x = batch()
    y, params = BatchAugment(single_transform("grayscale"))(x, gen(), return_params=True)
    assert params["grayscale"].all()
    torch.testing.assert_close(y[:, 0], y[:, 1])
    torch.testing.assert_close(y[:, 1], y[:, 2])
    torch.testing.assert_close(colorization_view(x), y)
    x1 = batch(c=1)
    assert torch.equal(BatchAugment(single_transform("grayscale"))(x1, gen()), x1)


def _torchvision_jitter(img, b, c, s, h, order):
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for op in order:
        img = fns[op](img, [b, c, s, h][op])
    return img


def test_one_channel_jitter_matches_torchvision():
    x = batch(b=8, c=1)
    y, p = BatchAugment(single_transform("color_jitter"))(x, gen(), return_params=True)
    assert p["jitter"].all() and (p["saturation"] == 1).all() and (p["hue"] == 0).all()
    for i in range(len(x)):
        ref = _torchvision_jitter(x[i], *(float(p[k][i]) for k in ("brightness", "contrast", "saturation", "hue")),
                                  p["jitter_order"][i].tolist())
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_rgb_jitter_without_hue_matches_torchvision():
    x = batch(b=8)
    g = gen(5)
    b, c, s = (0.5 + torch.rand(3, 8, generator=g)).unbind(0)
    order = torch.rand(8, 4, generator=g).argsort(1)
    y = color_jitter(x, b, c, s, torch.zeros(8), order)
    for i in range(8):
        ref = _torchvision_jitter(x[i], float(b[i]), float(c[i]), float(s[i]), 0.0, order[i].tolist())
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_hue_keeps_grays_and_moves_red_like_torchvision():
    gray = torch.full((1, 3, 2, 2), 0.4)
    ones = torch.ones(1)
    torch.testing.assert_close(color_jitter(gray, ones, ones, ones, torch.tensor([0.3]), torch.arange(4)[None]), gray)
    red = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1)
    ours = color_jitter(red, ones, ones, ones, torch.tensor([0.05]), torch.arange(4)[None])
    ref = TF.adjust_hue(red[0], 0.05)
    assert (ours[0, 1] - red[0, 1]).item() > 0 and (ref[1] - red[0, 1]).item() > 0


def test_blur_matches_torchvision_for_drawn_sigma():
    x = batch(b=4, h=20)
    y, p = BatchAugment(single_transform("blur", 0.6))(x, gen(), return_params=True)
    k = blur_kernel_size(20)
    for i, sigma in enumerate(p["blur_sigma"].tolist()):
        torch.testing.assert_close(y[i], TF.gaussian_blur(x[i], [k, k], [sigma, sigma]), atol=1e-5, rtol=0)
    torch.testing.assert_close(gaussian_blur(x, torch.zeros(4), 5), x)


def test_solarize_p1_inverts_bright_pixels():
    x = batch()
    y, p = BatchAugment(single_transform("solarize"))(x, gen(), return_params=True)
    assert p["solarize"].all()
    torch.testing.assert_close(y, torch.where(x >= 0.5, 1 - x, x))


# --------------------------------------------------------------------------- context


def _patches(img, g):
    c, h, w = img.shape
    ph, pw = h // g, w // g
    return sorted(img[:, r * ph:(r + 1) * ph, q * pw:(q + 1) * pw].flatten().tolist() for r in range(g) for q in range(g))


@pytest.mark.parametrize("grid,size", [(2, 8), (3, 12), (3, 14)])
def test_jigsaw_preserves_patch_multiset(grid, size):
    x = batch(b=5, h=size)
    cfg = replace(NONE, jigsaw_grid=grid, jigsaw_p=1.0)
    y, p = BatchAugment(cfg)(x, gen(), return_params=True)
    assert p["jigsaw_perm"].shape == (5, grid * grid)
    for i in range(5):
        assert sorted(p["jigsaw_perm"][i].tolist()) == list(range(grid * grid))
        assert _patches(y[i], grid) == _patches(x[i], grid)
    torch.testing.assert_close(y, apply_jigsaw(x, grid, p["jigsaw_perm"]))
    cut = (size // grid) * grid
    torch.testing.assert_close(y[..., cut:, :], x[..., cut:, :])   # remainder rows stay


def test_jigsaw_patch_semantics_and_standalone():
    x = torch.arange(4.0).view(1, 1, 2, 2)               # patches of 1 pixel: 0 1 / 2 3
    perm = torch.tensor([[3, 2, 1, 0]])
    assert apply_jigsaw(x, 2, perm).flatten().tolist() == [3.0, 2.0, 1.0, 0.0]
    y, perm = jigsaw(batch(b=3, h=8), 2, gen())
    assert y.shape == (3, 3, 8, 8) and perm.shape == (3, 4)


def test_cutout_zeroes_reported_box_only():
    x = batch(b=8, lo=0.1)
    y, p = BatchAugment(single_transform("cutout", 0.5))(x, gen(), return_params=True)
    for i, (x0, y0, w, h) in enumerate(p["cutout"].tolist()):
        assert w > 0 and h > 0
        mask = torch.zeros(16, 16, dtype=torch.bool)
        mask[y0:y0 + h, x0:x0 + w] = True
        assert (y[i][:, mask] == 0).all()
        torch.testing.assert_close(y[i][:, ~mask], x[i][:, ~mask])


# --------------------------------------------------------------------------- policies and specs


def test_parse_policy_presets_and_overrides():
    assert parse_policy("simclr") == AugmentConfig()
    cfg = parse_policy("simclr+rotate90_p=0.5,blur_p=0.3")
    assert cfg == replace(AugmentConfig(), rotate90_p=0.5, blur_p=0.3)
    assert parse_policy("none+crop_scale=0.5:1.0").crop_scale == (0.5, 1.0)
    assert parse_policy("crop+flip") == POLICIES["crop+flip"]
    assert parse_policy(" crop+flip+flip_p=1, out_size=24 ") == replace(POLICIES["crop+flip"], flip_p=1.0, out_size=24)
    assert parse_policy("context+jigsaw_grid=3+out_size=none").jigsaw_grid == 3


@pytest.mark.parametrize("spec,message", [
    ("simclrr", "presets: none, simclr"),
    ("simclr+bogus=1", "fields: crop_scale"),
    ("simclr+blur_p", "expected field=value"),
    ("simclr+crop_scale=0.5", "lo:hi"),
    ("simclr+jigsaw_grid=2.5", "jigsaw_grid"),
    ("simclr+flip_p=1.5", "must be in [0, 1]"),
])
def test_parse_policy_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(spec)


@pytest.mark.parametrize("cfg", [*POLICIES.values(),
                                 replace(AugmentConfig(), rotate90_p=0.25, crop_ratio=(0.5, 2.0), out_size=24),
                                 replace(NONE, blur_sigma=(1 / 3, 2 / 3), jigsaw_grid=4, jigsaw_p=0.1)])
def test_policy_spec_round_trip(cfg):
    spec = policy_to_spec(cfg)
    assert parse_policy(spec) == cfg


def test_policy_names_and_descriptions():
    assert policy_to_spec(POLICIES["simclr"]) == "simclr"
    assert describe_policy(NONE) == "identity (no augmentation)"
    assert "crop 0.20-1.00" in describe_policy(POLICIES["simclr"])
    assert "jigsaw 2x2" in describe_policy(POLICIES["context"])


def test_rotate90_preset_and_rotation_transform_have_distinct_names():
    assert POLICIES["rotate90"] == replace(NONE, rotate90_p=0.75)          # quarter turns, uniform over {0, 90, 180, 270}
    assert policy_to_spec(POLICIES["rotate90"]) == "rotate90"
    assert "rotation" not in POLICIES and "rotation" in SINGLE_TRANSFORMS  # "rotation" is the free angle only
    assert single_transform("rotation").rotation_degrees == 180.0 and single_transform("rotation").rotate90_p == 0.0
    with pytest.raises(ValueError, match="presets: .*rotate90"):            # the old preset name lists the valid ones
        parse_policy("rotation")


@pytest.mark.parametrize("name", SINGLE_TRANSFORMS)
def test_single_transforms_apply_exactly_one_thing(name):
    cfg = single_transform(name, 0.5)
    changed = {f for f in AugmentConfig.__dataclass_fields__ if getattr(cfg, f) != getattr(NONE, f)}
    assert changed and changed <= {"jitter_p", "jitter_strength", "grayscale_p", "rotate90_p", "rotation_degrees", "flip_p",
                                   "crop_scale", "blur_p", "blur_sigma", "solarize_p", "solarize_threshold", "jigsaw_grid", "jigsaw_p",
                                   "cutout_p", "cutout_scale"}
    x = batch()
    assert not torch.allclose(BatchAugment(cfg)(x, gen()), x)


def test_single_transform_errors():
    with pytest.raises(ValueError, match="color_jitter"):
        single_transform("sharpen")
    with pytest.raises(ValueError, match="strength"):
        single_transform("blur", 0.0)


def test_describe_params_is_readable():
    cfg = replace(POLICIES["simclr-strong"], jigsaw_grid=2, jigsaw_p=1.0, cutout_p=1.0)
    _, params = BatchAugment(cfg)(batch(), gen(), return_params=True)
    info = describe_params(params, 1)
    assert info["crop"].startswith("x=") and isinstance(info["flip"], bool)
    assert {"rotation", "brightness", "contrast", "saturation", "hue", "grayscale", "blur sigma", "jigsaw", "cutout"} <= set(info)
    assert all(isinstance(v, (str, float, bool)) for v in info.values())


# --------------------------------------------------------------------------- multi-view and v2


def test_multiview_two_plus_small_crops():
    x = batch(b=4, h=32)
    views, params = MultiViewAugment(POLICIES["swav"], n_views=2, small_crops=3)(x, gen(), return_params=True)
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 14, 14)] * 3
    assert len(params) == 5
    area = params[3]["crop"][:, 2] * params[3]["crop"][:, 3]
    assert (area <= 0.14 + 1e-6).all()
    assert not torch.allclose(views[0], views[1])
    two = MultiViewAugment(POLICIES["simclr"], small_crops=2, small_size=8)(x, gen())
    assert [v.shape[-1] for v in two] == [32, 32, 8, 8]


@pytest.mark.parametrize("name", list(POLICIES))
def test_v2_transform_on_pil_and_uint8_tensor(name):
    torch.manual_seed(0)
    t = v2_transform(POLICIES[name], 24)
    rgb = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for img, channels in [(rgb, 3), (rgb.convert("L"), 1), (torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8), 3),
                          (torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8), 1)]:
        out = t(img)
        assert out.shape == (channels, 24, 24) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1


def test_v2_rot90_and_jigsaw_custom_transforms():
    img = torch.rand(3, 8, 8)
    out = v2_transform(single_transform("rotate90"), 8)(img)
    assert any(torch.allclose(out, torch.rot90(img, k, (-2, -1))) for k in (1, 2, 3))
    out = v2_transform(replace(NONE, jigsaw_grid=2, jigsaw_p=1.0), 8)(img)
    assert _patches(out, 2) == _patches(img, 2)


def test_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3)
    torch.testing.assert_close(affine_grid(theta, (7, 9)), torch.nn.functional.affine_grid(theta, [5, 1, 7, 9], align_corners=False))


@pytest.mark.parametrize("preset", ["simclr", "none", "byol", "context", "rotate90", "geometric"])
def test_augment_knobs_round_trip(preset):
    base = POLICIES[preset]
    assert policy_from_knobs(base, knobs_from_policy(base)) == base
    knobs = {**knobs_from_policy(base), "blur": (True, 0.3), "flip": (False, 0.5), "crop": (True, 0.4)}
    policy = policy_from_knobs(base, knobs)
    assert (policy.blur_p, policy.flip_p, policy.crop_scale[0]) == (0.3, 0.0, 0.4)
    assert parse_policy(policy_to_spec(policy)) == policy
    assert set(knobs_from_policy(base)) == set(AUGMENT_KNOBS)


def test_package_reexports_every_public_name():
    import ssl_viz.augment as augment

    assert all(hasattr(augment, name) for name in augment.__all__)
    assert {"BatchAugment", "MultiViewAugment", "v2_transform", "parse_policy", "AUGMENT_KNOBS"} <= set(augment.__all__)
