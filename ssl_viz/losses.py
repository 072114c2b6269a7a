"""Small pure loss functions of contrastive and non-contrastive SSL.

Every function takes embeddings (not images), returns a scalar tensor, and
never touches a model, a queue or ``torch.distributed``: gathering across DDP
ranks is the caller's job (see ``ssl_viz.methods``).

Conventions: ``N`` is the batch size, ``D`` the embedding size, ``M`` the number
of negatives, ``K`` the number of prototypes. Embeddings are L2-normalised
inside the losses that need cosine similarities. Contrastive logits always put
the positive in column 0 (``[N, 1 + M]``) and use cross-entropy with target 0,
so one InfoNCE serves SimCLR, MoCo and the memory bank.

Losses run in full precision: half-precision inputs are upcast to float32 and
autocast is disabled inside (cosines divided by a small temperature are too
coarse in bf16); float64 inputs stay float64.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "byol_loss",
    "contrastive_loss",
    "info_nce",
    "info_nce_logits",
    "nce",
    "nce_z_estimate",
    "nt_xent",
    "nt_xent_logits",
    "sinkhorn_knopp",
    "swav_loss",
]


def _full_precision(fn):
    """Run ``fn`` with autocast off and half-precision tensor arguments upcast to float32."""

    def up(x):
        if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(up(v) for v in x)
        return x

    def first_tensor(values):
        for v in values:
            if isinstance(v, torch.Tensor):
                return v
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor):
                return v[0]
        return None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = first_tensor(list(args) + list(kwargs.values()))
        device_type = t.device.type if t is not None else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*up(args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


@_full_precision
def contrastive_loss(
    logits: torch.Tensor, temperature: float, tau_plus: float = 0.0, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of logits ``[N, 1 + M]`` (cos / t, positive in column 0) with target 0.

    The shared last step of :func:`nt_xent` and :func:`info_nce`; methods that also
    want the logits (for logs or pictures) build them once and call this.

    ``tau_plus > 0`` replaces the sum over negatives by the debiased estimator of
    Chuang et al. 2020 ("Debiased Contrastive Learning", eq. 6 with the bound of
    Sec. 3)::

        N_g = max( (sum_j e^{s_j} - tau+ M e^{s_pos}) / (1 - tau+),  M e^{-1/t} )
        loss = -log( e^{s_pos} / (e^{s_pos} + N_g) )

    ``negative_mask`` ``[N, M]`` (True = not a negative) drops entries; their logits
    must already be ``-inf`` (as :func:`info_nce_logits` makes them).
    """
    if tau_plus <= 0.0:
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)
    if not 0.0 < tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    num_neg = logits.shape[1] - 1
    m = torch.full((logits.shape[0],), float(num_neg), dtype=logits.dtype, device=logits.device)
    if negative_mask is not None:
        m = m - negative_mask.sum(dim=1).to(logits.dtype)
    # shift by the row maximum: the loss is invariant to it, and exp() cannot overflow
    c = logits.max(dim=1, keepdim=True).values.detach()
    pos = logits[:, 0] - c[:, 0]                                         # log e^{s_pos}, shifted
    neg = torch.exp(logits[:, 1:] - c).sum(dim=1)                        # sum_j e^{s_j}, shifted
    ng = (neg - tau_plus * m * torch.exp(pos)) / (1.0 - tau_plus)
    ng = torch.maximum(ng, m * torch.exp(-1.0 / temperature - c[:, 0]))  # N_g >= M e^{-1/t}
    return (torch.log(torch.exp(pos) + ng) - pos).mean()


# ----------------------------------------------------------------------------- NT-Xent (SimCLR)


@_full_precision
def nt_xent_logits(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent logits of all 2N anchors, positive in column 0: ``[2N, 1 + (2N_all - 2)]``.

    Args:
        z1, z2: ``[N, D]`` the two views' projections (normalised here); row i of
            ``z1`` and row i of ``z2`` come from the same image.
        temperature: tau.
        z1_all, z2_all: ``[N_all, D]`` candidates (default ``z1``, ``z2``). Under DDP
            the caller passes the views gathered across ranks (with gradients).
        offset: where this rank's rows start in ``z*_all`` (``rank * N``).

    Row order: anchors ``z1`` then ``z2``. Columns: the other view of the same
    image, then every candidate except the anchor itself and its positive, in
    the order of ``cat([z1_all, z2_all])``.
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    n, n_all = z1.shape[0], z1_all.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)                   # 2N x D
    cands = F.normalize(torch.cat([z1_all, z2_all]), dim=1)             # 2N_all x D
    sim = anchors @ cands.T / temperature                               # 2N x 2N_all
    local = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([local, local + n_all])                        # anchor's own column
    pos_idx = torch.cat([local + n_all, local])                         # its other view
    rows = torch.arange(2 * n, device=z1.device)
    l_pos = sim[rows, pos_idx].unsqueeze(1)                             # 2N x 1
    keep = torch.ones_like(sim, dtype=torch.bool)
    keep[rows, self_idx] = False
    keep[rows, pos_idx] = False
    l_neg = sim[keep].view(2 * n, 2 * n_all - 2)                        # 2N x (2N_all - 2)
    return torch.cat([l_pos, l_neg], dim=1)


@_full_precision
def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.0,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", eq. 1: for a positive pair (i, j) among 2N views::

        l(i, j) = -log exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t)

    averaged over all 2N anchors; each anchor's positive is its other view and
    the negatives are the other 2N - 2 samples.

    Args:
        z1, z2: ``[N, D]`` projections of the two views (normalised here).
        temperature: tau.
        tau_plus: class prior of the debiased contrastive loss (Chuang et al.
            2020); 0 gives plain NT-Xent.
        z1_all, z2_all, offset: DDP only: candidates gathered across ranks
            ``[N_all, D]`` (with gradients) and this rank's row offset in them;
            the anchors stay the local ``z1``, ``z2``. See :func:`nt_xent_logits`.

    Returns:
        scalar loss.
    """
    logits = nt_xent_logits(z1, z2, temperature, z1_all, z2_all, offset)   # 2N x (2N_all - 1)
    return contrastive_loss(logits, temperature, tau_plus)


# ----------------------------------------------------------------------------- InfoNCE (CPC, MoCo, memory bank)


@_full_precision
def info_nce_logits(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    negative_keys: torch.Tensor | None = None,
    temperature: float = 0.1,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE logits ``[N, 1 + M]`` (cosine / t), the positive in column 0.

    Args:
        query: ``[N, D]``.
        positive_key: ``[N, D]``, row i is query i's positive.
        negative_keys: ``[M, D]`` shared by all queries (a queue or memory bank),
            ``[N, M, D]`` per query, or None: the other queries' positives are the
            negatives (M = N - 1, "in-batch" negatives).
        temperature: tau.
        negative_mask: optional ``[N, M]`` bool, True where a key is not a negative
            of that query (e.g. the query's own memory-bank entry); those logits
            are ``-inf``.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(positive_key, dim=1)
    l_pos = torch.einsum("nd,nd->n", q, k).unsqueeze(1)                 # N x 1
    if negative_keys is None:
        sim = q @ k.T                                                   # N x N
        off_diag = ~torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
        l_neg = sim[off_diag].view(q.shape[0], q.shape[0] - 1)          # N x (N-1)
    elif negative_keys.ndim == 2:
        l_neg = q @ F.normalize(negative_keys, dim=1).T                 # N x M
    elif negative_keys.ndim == 3:
        l_neg = torch.einsum("nd,nmd->nm", q, F.normalize(negative_keys, dim=2))  # N x M
    else:
        raise ValueError(f"negative_keys must be [M, D] or [N, M, D], got {tuple(negative_keys.shape)}")
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature             # N x (1+M)
    if negative_mask is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(negative_mask, float("-inf"))], dim=1)
    return logits


@_full_precision
def info_nce(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    negative_keys: torch.Tensor | None = None,
    temperature: float = 0.1,
    tau_plus: float = 0.0,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018, "Representation Learning with Contrastive
    Predictive Coding", eq. 4; MoCo, He et al. 2020, eq. 1)::

        L_q = -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_{k-} exp(q.k- / t))

    averaged over the N queries; computed as cross-entropy over the logits of
    :func:`info_nce_logits` (``[N, 1 + M]``, positive in column 0) with target 0.

    Args:
        query: ``[N, D]``; positive_key: ``[N, D]``.
        negative_keys: ``[M, D]`` shared, ``[N, M, D]`` per query, or None
            (in-batch negatives: the other rows of ``positive_key``).
        temperature: tau.
        tau_plus: debiased estimator of Chuang et al. 2020 when > 0.
        negative_mask: ``[N, M]`` bool, True = exclude from the negatives.

    Returns:
        scalar loss.
    """
    logits = info_nce_logits(query, positive_key, negative_keys, temperature, negative_mask)
    return contrastive_loss(logits, temperature, tau_plus, negative_mask)


# ----------------------------------------------------------------------------- NCE (InstDisc)


@_full_precision
def nce(pos_logits: torch.Tensor, neg_logits: torch.Tensor, num_samples: int, z: float | torch.Tensor) -> torch.Tensor:
    """Noise-contrastive estimation of the non-parametric softmax (Wu et al. 2018,
    "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", eq. 5-7).

    With ``P(i|v) = exp(v_i.v / t) / Z`` (eq. 5 with the partition function Z held
    constant), uniform noise ``P_n = 1/n`` and m noise samples, the posterior that
    sample i comes from the data is ``h(i, v) = P(i|v) / (P(i|v) + m P_n)`` and::

        J_NCE = -E_{P_d}[log h(i, v)] - m E_{P_n}[log(1 - h(i, v'))]

    where the second expectation is estimated by the sum over the m sampled
    negatives. ``h = sigmoid(s - log Z - log(m / n))`` is used for stability.

    Args:
        pos_logits: ``[N]`` ``v_i.f_i / t``: each sample against its own memory entry.
        neg_logits: ``[N, m]`` ``v_j.f_i / t`` against m noise samples drawn from P_n.
        num_samples: n, the size of the memory bank (dataset).
        z: the partition-function estimate Z (see :func:`nce_z_estimate`).

    Returns:
        scalar loss, averaged over the N samples.
    """
    m = neg_logits.shape[1]
    z = torch.as_tensor(z, dtype=pos_logits.dtype, device=pos_logits.device)
    shift = torch.log(z) + math.log(m / num_samples)                   # log(Z m P_n)
    log_h_pos = F.logsigmoid(pos_logits - shift)                       # log h(i, v)
    log_1m_h_neg = F.logsigmoid(-(neg_logits - shift))                 # log(1 - h(i, v'))
    return -(log_h_pos + log_1m_h_neg.sum(dim=1)).mean()


@torch.no_grad()
def nce_z_estimate(neg_logits: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Monte-Carlo estimate of the partition function ``Z ~ n E_j[exp(v_j.f / t)]``
    from logits ``[N, m]`` against uniformly sampled bank entries (Wu et al. 2018,
    Sec. 3.2: estimated once and then kept constant)."""
    return num_samples * torch.exp(neg_logits.double()).mean().to(neg_logits.dtype)


# ----------------------------------------------------------------------------- SwAV


@torch.no_grad()
@_full_precision
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Equipartitioned soft assignments of samples to prototypes (SwAV, Caron et al.
    2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", Sec. 3.1 and Alg. 1).

    ``Q = exp(scores / eps)``, then alternately normalise the prototype marginals to
    ``1/K`` and the sample marginals to ``1/B``; returned rescaled so that each
    sample's row sums to 1 (a distribution over prototypes) while each prototype
    receives about ``B/K`` of the mass.

    Args:
        scores: ``[B, K]`` ``z.c`` of normalised embeddings and prototypes. Under DDP
            the caller gathers the scores first and keeps its own rows afterwards.
        eps: entropy regularisation epsilon.
        iters: Sinkhorn iterations.

    Returns:
        Q: ``[B, K]``, rows sum to 1, no gradient.
    """
    # Alg. 1 in the log domain (same iterates, no overflow/underflow for any eps)
    log_q = scores / eps                                               # B x K
    log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)            # Q /= sum(Q)
    b, k = log_q.shape
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)   # prototypes: mass 1/K each
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(b)   # samples: mass 1/B each
    return torch.exp(log_q + math.log(b))                               # B x K, rows sum to 1


@_full_precision
def swav_loss(scores_list: list[torch.Tensor], assignments_list: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """Swapped prediction (SwAV, Caron et al. 2020, eq. 1-2): the code of one view is
    predicted from every other view::

        l(z_t, q_s) = -sum_k q_s^(k) log softmax_k(z_t.c_k / t)

    For each view s that has a code (the large crops), the loss is averaged over
    the V - 1 other views t, then over the codes.

    Args:
        scores_list: V tensors ``[B, K]`` of prototype scores ``z_t.c``, one per view.
        assignments_list: A <= V codes ``[B, K]`` (rows sum to 1, e.g. from
            :func:`sinkhorn_knopp`); ``assignments_list[s]`` belongs to view s.
        temperature: softmax temperature t.

    Returns:
        scalar loss.
    """
    num_views = len(scores_list)
    if not 0 < len(assignments_list) <= num_views or num_views < 2:
        raise ValueError(f"need >= 2 views and 1..{num_views} assignments, got {num_views} and {len(assignments_list)}")
    log_p = [F.log_softmax(s / temperature, dim=1) for s in scores_list]
    loss = 0.0
    for s, q in enumerate(assignments_list):
        sub = sum(-(q * log_p[t]).sum(dim=1).mean() for t in range(num_views) if t != s)
        loss = loss + sub / (num_views - 1)
    return loss / len(assignments_list)


# ----------------------------------------------------------------------------- BYOL


@_full_precision
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss (Grill et al. 2020, "Bootstrap Your Own Latent", eq. 2)::

        L = || p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)

    averaged over the batch. ``p`` ``[N, D]``: online predictions; ``z`` ``[N, D]``:
    target projections (the caller passes them detached / from the EMA target).
    """
    return (2.0 - 2.0 * F.cosine_similarity(p, z, dim=1)).mean()
