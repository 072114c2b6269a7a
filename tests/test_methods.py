"""SSL methods: they learn on real digits, forward has no side effects, on_step_end applies StepOutput.state."""

import os
import socket

import pytest
import torch
import torch.nn.functional as F

from ssl_viz.config import MethodConfig
from ssl_viz.data import load_dataset
from ssl_viz.encoders import build_encoder
from ssl_viz.methods import METHODS, StepOutput, build_method

N_IMAGES, BATCH, STEPS = 256, 64, 30
CFG = MethodConfig(
    proj_dim=32, proj_hidden=64, predictor_hidden=64, queue_size=256, n_prototypes=16, freeze_prototypes_steps=5, nce_negatives=64
)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Models this small gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """The first 256 digits as float [0, 1] images upsampled to 16x16, with labels."""
    ds = load_dataset("digits")
    x = F.interpolate(ds.images[:N_IMAGES].float() / 255, size=16, mode="bilinear", align_corners=False)
    return x, ds.labels[:N_IMAGES]


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, scale 0.9-1.1, shift up to 15 %, Gaussian noise."""
    b = x.shape[0]
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    scale = 0.9 + 0.2 * torch.rand(b, generator=g)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = (torch.rand(b, 2, generator=g) - 0.5) * 0.3
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def make(name: str, cfg: MethodConfig = CFG):
    return build_method(name, build_encoder("small-cnn", in_channels=1, width=8), cfg, num_samples=N_IMAGES, num_classes=10)


def batch(digits, g, n_views=2, size=BATCH):
    x, y = digits
    idx = torch.randperm(N_IMAGES, generator=g)[:size]
    return [augment(x[idx], g) for _ in range(n_views)], idx, y[idx]


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, after):
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


def train_step(method, opt, step, views, idx, labels, total=STEPS, generator=None):
    out = method(views, idx, labels, generator=generator)
    opt.zero_grad()
    out.loss.backward()
    method.before_optimizer_step(step)
    opt.step()
    method.on_step_end(out, step, total)
    return out


# ----------------------------------------------------------------------------- registry


def test_registry_and_build():
    assert list(METHODS) == ["simclr", "memory_bank", "moco", "swav", "byol", "supervised"]
    for name, cls in METHODS.items():
        assert cls.description and "\n" not in cls.description
        assert cls.name == name
    with pytest.raises(ValueError, match="simclr"):
        make("nope")
    with pytest.raises(ValueError):
        build_method("memory_bank", build_encoder("small-cnn", in_channels=1, width=8), CFG, num_samples=0, num_classes=10)
    with pytest.raises(ValueError):
        build_method("supervised", build_encoder("small-cnn", in_channels=1, width=8), CFG, num_samples=10, num_classes=0)


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", [*METHODS, "memory_bank-nce"])
def test_training_reduces_loss(name, digits):
    cfg = CFG
    if name == "memory_bank-nce":
        name, cfg = "memory_bank", MethodConfig(**{**CFG.__dict__, "bank_loss": "nce"})
    g = torch.Generator().manual_seed(0)
    method = make(name, cfg).train()
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    if name == "moco":  # fill the queue with real keys first: a random queue makes early losses artificially low
        for _ in range(cfg.queue_size // (2 * BATCH)):
            views, idx, _ = batch(digits, g)
            method.on_step_end(method(views, idx), 0, STEPS)
    losses = []
    negatives = torch.Generator().manual_seed(10)   # the memory bank's draws
    for step in range(STEPS):
        out = train_step(method, opt, step, *batch(digits, g), generator=negatives)
        assert all(torch.as_tensor(v).numel() == 1 for v in out.logs.values())
        assert out.floats()["loss"] == pytest.approx(out.loss.item())
        losses.append(out.floats()["loss"])
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05 * abs(first), losses


# ----------------------------------------------------------------------------- side effects


@pytest.mark.parametrize("name", list(METHODS))
def test_forward_changes_no_state(name, digits):
    method = make(name)
    g = torch.Generator().manual_seed(1)
    views, idx, labels = batch(digits, g, size=16)
    before = snapshot(method)
    method.eval()
    attributes = dict(vars(method))
    method(views, idx, labels)
    assert changed(before, snapshot(method)) == []
    assert vars(method).keys() == attributes.keys() and all(vars(method)[k] is v for k, v in attributes.items())  # nothing stashed
    method.train()(views, idx, labels)          # train mode: BatchNorm statistics only
    assert all(k.endswith(BN_STATS) for k in changed(before, snapshot(method)))


@pytest.mark.parametrize("name", list(METHODS))
def test_embed_is_pure_and_deterministic(name, digits):
    method = make(name).eval()
    x = digits[0][:16]
    before = snapshot(method)
    e1, e2 = method.embed(x), method.embed(x)
    assert e1.shape == (16, method.encoder.feature_dim) and not e1.requires_grad
    assert torch.equal(e1, e2)
    assert method.project(x).shape == (16, CFG.proj_dim)
    assert changed(before, snapshot(method)) == []


def test_on_step_end_without_forward_is_safe():
    for name in METHODS:
        make(name).on_step_end(StepOutput(torch.zeros(())), 0, 10)   # an empty state: nothing to enqueue


@pytest.mark.parametrize("name", list(METHODS))
def test_forward_draws_only_from_the_generator_it_is_given(name, digits):
    """No method touches torch's global RNG; the same generator seed gives the same step (memory-bank negatives)."""
    cfg = MethodConfig(**{**CFG.__dict__, "nce_negatives": 16})         # fewer negatives than the bank: sampled
    method = make(name, cfg).eval()
    views, idx, labels = batch(digits, torch.Generator().manual_seed(11), size=8)
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    losses = [method(views, idx, labels, generator=torch.Generator().manual_seed(s)).loss for s in (1, 1, 2)]
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(losses[0], losses[1])
    if name == "memory_bank":
        assert not torch.equal(losses[0], losses[2])                     # other negatives


# ----------------------------------------------------------------------------- explicit state updates


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_queue_and_momentum_update(symmetric, digits):
    cfg = MethodConfig(**{**CFG.__dict__, "symmetric": symmetric, "queue_size": 40, "momentum": 0.9})
    method = make("moco", cfg).train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(2)
    views, idx, _ = batch(digits, g, size=16)
    queue_before = method.queue.clone()
    out = method(views, idx)
    assert torch.equal(method.queue, queue_before) and int(method.queue_ptr) == 0
    keys = out.state["keys"].clone()
    n_keys = 32 if symmetric else 16
    assert keys.shape == (n_keys, cfg.proj_dim)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    k_before = [p.clone() for p in method.key_encoder.parameters()]
    q_params = list(method.encoder.parameters())
    method.on_step_end(out, 0, 10)
    # enqueue: pointer advances by the number of keys, newest keys sit at the old pointer
    assert int(method.queue_ptr) == n_keys
    torch.testing.assert_close(method.queue[:n_keys], keys)
    torch.testing.assert_close(method.queue[n_keys:], queue_before[n_keys:])
    # EMA: theta_k <- m theta_k + (1 - m) theta_q
    for kb, ka, q in zip(k_before, method.key_encoder.parameters(), q_params):
        torch.testing.assert_close(ka, 0.9 * kb + 0.1 * q.detach())
    # the ring buffer wraps around: 40 slots, the second batch of keys goes to (ptr + i) % 40
    out = method(views, idx)
    keys2 = out.state["keys"].clone()
    method.on_step_end(out, 1, 10)
    slots = (n_keys + torch.arange(n_keys)) % 40
    torch.testing.assert_close(method.queue[slots], keys2)
    assert int(method.queue_ptr) == (2 * n_keys) % 40
    assert all(not p.requires_grad for p in method.key_encoder.parameters())


def test_memory_bank_updates_only_visited_entries(digits):
    method = make("memory_bank").train()
    g = torch.Generator().manual_seed(3)
    views, idx, _ = batch(digits, g, size=16)
    bank_before = method.bank.clone()
    out = method(views, idx)
    assert torch.equal(method.bank, bank_before)
    f = out.state["features"]
    method.on_step_end(out, 0, 10)
    m = CFG.bank_momentum
    torch.testing.assert_close(method.bank[idx], F.normalize(m * bank_before[idx] + (1 - m) * f, dim=1))
    others = torch.ones(N_IMAGES, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(method.bank[others], bank_before[others])
    torch.testing.assert_close(method.bank.norm(dim=1), torch.ones(N_IMAGES))


def test_memory_bank_nce_fixes_z_after_first_step(digits):
    method = make("memory_bank", MethodConfig(**{**CFG.__dict__, "bank_loss": "nce"}))
    g = torch.Generator().manual_seed(4)
    assert float(method.nce_z) < 0
    out = method(*batch(digits, g, size=16)[:2])
    assert float(method.nce_z) < 0
    method.on_step_end(out, 0, 10)
    z = float(method.nce_z)
    assert z > 0
    out = method(*batch(digits, g, size=16)[:2])
    method.on_step_end(out, 1, 10)
    assert float(method.nce_z) == z


def test_memory_bank_full_softmax_when_bank_is_small(digits):
    cfg = MethodConfig(**{**CFG.__dict__, "nce_negatives": 4096})     # > bank size: whole bank
    method = make("memory_bank", cfg).eval()
    views, idx, _ = batch(digits, torch.Generator().manual_seed(5), size=8)
    out = method(views[:1], idx)
    with torch.no_grad():
        f = F.normalize(method.projector(method.encoder(views[0])), dim=1)
        expected = F.cross_entropy(f @ method.bank.T / cfg.temperature, idx)   # InstDisc eq. 2
    torch.testing.assert_close(out.loss, expected)


def test_byol_target_moves_towards_online(digits):
    method = make("byol").train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(6)

    def distance():
        pairs = zip(method.target_encoder.parameters(), method.encoder.parameters())
        return sum(float((t - o).detach().pow(2).sum()) for t, o in pairs) ** 0.5

    assert distance() == 0.0
    out = method(*batch(digits, g, size=16)[:2])
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    d_before = distance()
    assert d_before > 0
    method.on_step_end(out, 0, 100)             # cosine schedule starts at tau_0 = cfg.momentum
    assert distance() == pytest.approx(CFG.momentum * d_before, rel=1e-4)
    assert all(not p.requires_grad for p in method.target_encoder.parameters())


def test_swav_prototypes_multicrop_freeze_and_queue(digits):
    cfg = MethodConfig(**{**CFG.__dict__, "swav_queue_size": 32, "freeze_prototypes_steps": 1})
    method = make("swav", cfg).train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(7)
    views, idx, _ = batch(digits, g, size=16)
    views += [F.interpolate(v, size=8, mode="bilinear", align_corners=False) for v in views]    # 2 small crops
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(cfg.n_prototypes))
    w0 = method.prototypes.weight.clone()
    train_step(method, opt, 0, views, idx, None)                         # step 0: prototypes frozen
    torch.testing.assert_close(method.prototypes.weight, w0)             # (re-normalised: rounding only)
    assert int(method.queue_count) == 16
    z_step0 = method.queue[:, :16].clone()
    out = method(views, idx)                                             # step 1: prototypes learn
    z_step1 = out.state["embeddings"].clone()                            # 2 x B x D, large crops
    opt.zero_grad()
    out.loss.backward()
    method.before_optimizer_step(1)
    opt.step()
    method.on_step_end(out, 1, 10)
    assert (method.prototypes.weight - w0).abs().max() > 1e-3
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(cfg.n_prototypes))
    assert int(method.queue_count) == 32                                 # full: used from the next step on
    torch.testing.assert_close(method.queue[:, :16], z_step1)            # newest first
    torch.testing.assert_close(method.queue[:, 16:], z_step0)
    method.eval()
    with torch.no_grad():
        scores = method.scores(views[0])[1]
        q = method.codes(scores, 0)
    assert q.shape == (16, cfg.n_prototypes)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(16))


def test_supervised_needs_labels_and_gives_logits(digits):
    method = make("supervised")
    views, idx, labels = batch(digits, torch.Generator().manual_seed(8), size=8)
    with pytest.raises(ValueError):
        method(views, idx)
    out = method(views, idx, labels)
    assert 0.0 <= out.logs["acc"] <= 1.0
    x = views[0].clone().requires_grad_()
    logits = method.eval().logits(x)
    assert logits.shape == (8, 10)
    logits[:, 0].sum().backward()                # attribution needs input gradients
    assert x.grad is not None
    assert not any(p.requires_grad for p in method.projector.parameters())


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank_, world, port, views, idx, ref_grads, ref_keys, ref_codes, errors):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank_, world_size=world)
    try:
        torch.set_num_threads(1)
        n = idx.shape[0] // world
        local = slice(rank_ * n, (rank_ + 1) * n)
        mine = [v[local] for v in views]
        # SimCLR: local anchors against gathered candidates, gradients averaged like DDP does
        torch.manual_seed(0)
        simclr = make("simclr").eval()
        simclr(mine, idx[local]).loss.backward()
        for p in simclr.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
            torch.testing.assert_close(p.grad, ref_grads.pop(0), atol=1e-5, rtol=1e-4)
        # MoCo: every rank enqueues every rank's keys
        torch.manual_seed(0)
        moco = make("moco").eval()
        moco.on_step_end(moco(mine, idx[local]), 0, 10)
        torch.testing.assert_close(moco.queue[: ref_keys.shape[0]], ref_keys, atol=1e-5, rtol=0)
        # SwAV: Sinkhorn over the global batch, this rank's rows
        torch.manual_seed(0)
        swav = make("swav").eval()
        with torch.no_grad():
            codes = swav.codes(swav.scores(mine[0])[1], 0)
        torch.testing.assert_close(codes, ref_codes[local], atol=1e-5, rtol=0)
    except Exception as exc:  # report to the parent
        errors.put(f"rank {rank_}: {exc!r}")
    finally:
        # without this barrier a rank can exit while its peer still reads the last collective,
        # and gloo aborts the peer (SIGABRT): seen in CI under load
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_gathering_matches_single_process(digits):
    """Two gloo ranks with half the batch each reproduce the single-process gradients,
    queue contents and Sinkhorn codes (eval mode, so BatchNorm is per-sample)."""
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(9)
    views, idx, _ = batch(digits, g, size=16)
    torch.manual_seed(0)
    simclr = make("simclr").eval()
    simclr(views, idx).loss.backward()
    ref_grads = [p.grad.clone() for p in simclr.parameters()]
    torch.manual_seed(0)
    moco = make("moco").eval()
    ref_keys = moco(views, idx).state["keys"].clone()
    # symmetric MoCo enqueues [k2; k1] per rank: rebuild the gathered order (rank 0's, then rank 1's)
    k2, k1 = ref_keys[:16], ref_keys[16:]
    ref_keys = torch.cat([k2[:8], k1[:8], k2[8:], k1[8:]])
    torch.manual_seed(0)
    swav = make("swav").eval()
    with torch.no_grad():
        ref_codes = swav.codes(swav.scores(views[0])[1], 0)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    mp.start_processes(
        _ddp_worker, args=(2, port, views, idx, ref_grads, ref_keys, ref_codes, errors), nprocs=2, join=True, start_method="spawn"
    )
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
