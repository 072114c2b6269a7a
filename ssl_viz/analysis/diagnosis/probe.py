"""FeatureProbe: a ridge classifier on the fixed probe features, reading only the feature groups the label needs."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ssl_viz.analysis.diagnosis.features import probe_features


class FeatureProbe:
    """A ridge classifier on :func:`probe_features`, with the feature groups chosen on held-out clean data.

    ``fit`` picks groups greedily (forward selection on a 25% validation split, a group is
    kept if it adds at least ``tolerance`` accuracy), so the probe reads only what the label
    needs; that keeps it from being thrown by changes in information the label does not use.

    Attributes (set by ``fit``): ``groups_``, ``validation_accuracy_``, ``num_classes_``.
    """

    def __init__(self, groups: Sequence[str] | None = None, ridge: float = 1e-3, tolerance: float = 0.01, seed: int = 0) -> None:
        self.groups, self.ridge, self.tolerance, self.seed = groups, ridge, tolerance, seed

    # -- the linear model
    def _solve(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
        Z = torch.cat([(X - mu) / sd, torch.ones(len(X), 1)], 1).double()
        Y = F.one_hot(y.long(), self.num_classes_).double()
        A = Z.T @ Z + self.ridge * len(X) * torch.eye(Z.shape[1], dtype=torch.float64)
        return mu, sd, torch.linalg.solve(A, Z.T @ Y)

    @staticmethod
    def _predict(params, X: torch.Tensor) -> torch.Tensor:
        mu, sd, W = params
        return (torch.cat([(X - mu) / sd, torch.ones(len(X), 1)], 1).double() @ W).argmax(1)

    @staticmethod
    def _stack(feats: dict[str, torch.Tensor], groups: Sequence[str]) -> torch.Tensor:
        return torch.cat([feats[g] for g in groups], 1)

    def _select(self, feats: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[list[str], float]:
        n = len(y)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        va, tr = perm[: max(1, n // 4)], perm[max(1, n // 4):]
        chosen: list[str] = []
        best = 0.0
        while True:
            scores = {}
            for g in feats:
                if g in chosen:
                    continue
                X = self._stack(feats, chosen + [g])
                scores[g] = float((self._predict(self._solve(X[tr], y[tr]), X[va]) == y[va]).float().mean())
            if not scores:
                break
            g, s = max(scores.items(), key=lambda kv: kv[1])
            if chosen and s < best + self.tolerance:
                break
            chosen.append(g)
            best = s
        return chosen, best

    # -- public API
    def fit(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, num_classes: int | None = None,
            features: dict[str, torch.Tensor] | None = None) -> FeatureProbe:
        """Fit on images ``x [N, C, H, W]`` with labels ``y [N]`` (or precomputed ``features``)."""
        y = torch.as_tensor(y).long()
        self.num_classes_ = int(num_classes or int(y.max()) + 1)
        feats = features if features is not None else probe_features(x, mask, self.groups)
        if self.groups is None:
            self.groups_, self.validation_accuracy_ = self._select(feats, y)
        else:
            self.groups_, self.validation_accuracy_ = [g for g in self.groups if g in feats], float("nan")
        self.params_ = self._solve(self._stack(feats, self.groups_), y)
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor) -> FeatureProbe:
        """A new probe with this one's groups, fitted on a stacked feature matrix ``X [N, F]`` of them."""
        other = copy.copy(self)
        other.params_ = self._solve(X, torch.as_tensor(y).long())
        return other

    def transform(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The stacked features of the chosen groups ``[N, F]``."""
        return self._stack(probe_features(x, mask, self.groups_), self.groups_)

    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        return self._predict(self.params_, self.transform(x, mask) if features is None else features)

    def score(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, features: torch.Tensor | None = None) -> float:
        return float((self.predict(x, mask, features) == torch.as_tensor(y).long()).float().mean())
