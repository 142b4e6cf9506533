"""Synthetic data for the claims that need embeddings we can draw: a Gaussian mixture.

CIFAR-10 lives in :mod:`vqstudy.cifar10`. Synthetic data is generated from a seed and
never stored, so every run can rebuild exactly the set it trained on.
"""

import torch


def class_centres(n_classes: int, dim: int, separation: float, seed: int) -> torch.Tensor:
    """Random class means of norm ``separation``: in ``dim`` >= 10 dimensions random
    directions are nearly orthogonal, so centres sit about ``separation * sqrt(2)`` apart."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_classes, dim, generator=g)
    return separation * directions / directions.norm(dim=1, keepdim=True)


def gaussian_mixture(
    n_per_class: int = 1000,
    dim: int = 16,
    n_classes: int = 10,
    separation: float = 8.0,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_classes`` equal-sized, well-separated isotropic Gaussian classes.

    Returns inputs ``(n_classes * n_per_class, dim)`` float32 and labels int64, grouped by
    class (class c occupies rows ``c * n_per_class`` to ``(c + 1) * n_per_class``), so
    that a caller can split every class the same way. The class means depend only on
    ``seed``; the samples too, so the same seed always gives the same data.
    """
    if n_per_class <= 0 or dim <= 0 or n_classes <= 0:
        raise ValueError(f"n_per_class, dim and n_classes must be positive, got {n_per_class}, {dim}, {n_classes}")
    centres = class_centres(n_classes, dim, separation, seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise_draws = noise * torch.randn(n_classes, n_per_class, dim, generator=g)
    x = (centres[:, None, :] + noise_draws).reshape(-1, dim)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return x, y


def split_per_class(x: torch.Tensor, y: torch.Tensor, n_classes: int, n_train_per_class: int):
    """Split class-grouped data (as from :func:`gaussian_mixture`) into train and
    evaluation sets with the same number of examples of every class in each."""
    per_class = len(y) // n_classes
    if not 0 < n_train_per_class < per_class:
        raise ValueError(f"n_train_per_class must be in 1..{per_class - 1}, got {n_train_per_class}")
    in_train = (torch.arange(len(y)) % per_class) < n_train_per_class
    return (x[in_train], y[in_train]), (x[~in_train], y[~in_train])
