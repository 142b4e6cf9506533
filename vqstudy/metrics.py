"""The study's metrics (STUDY.md, Metrics), each computed over a whole evaluation set
at once: per-batch perplexity would depend on the batch size."""

import torch


def token_counts(indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """How often each token is the nearest one."""
    return torch.bincount(indices.reshape(-1), minlength=num_tokens)


def perplexity(counts: torch.Tensor) -> float:
    """exp(H(p)) of the token-use distribution: K for uniform use, 1 for one token."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def usage(counts: torch.Tensor) -> float:
    """Fraction of tokens used at least once."""
    return float((counts > 0).double().mean())


def dead_tokens(counts: torch.Tensor) -> int:
    return int((counts == 0).sum())


def covariance_trace(x: torch.Tensor) -> float:
    """Trace of the covariance of the rows of ``x`` (total variance)."""
    x = x.double()
    return float((x - x.mean(0)).pow(2).sum(0).div(max(1, x.shape[0] - 1)).sum())


def codebook_spread(tokens: torch.Tensor, embeddings: torch.Tensor) -> float:
    """tr Cov(tokens) / tr Cov(embeddings): far below 1 means the tokens occupy a narrow
    part of the region the embeddings fill."""
    return covariance_trace(tokens) / covariance_trace(embeddings)


def class_coverage(indices: torch.Tensor, labels: torch.Tensor, num_tokens: int, n_classes: int) -> dict:
    """Each used token belongs to the class most of its assigned embeddings come from.
    Returns tokens owned per class and the number of classes owning at least one."""
    joint = torch.zeros(num_tokens, n_classes, dtype=torch.long)
    joint.index_put_((indices.reshape(-1), labels.reshape(-1)), torch.ones_like(labels.reshape(-1)), accumulate=True)
    used = joint.sum(1) > 0
    owner = joint.argmax(1)[used]
    per_class = torch.bincount(owner, minlength=n_classes)
    return {"tokens_per_class": per_class.tolist(), "classes_covered": int((per_class > 0).sum()),
            "min_tokens_per_class": int(per_class.min())}


def mse(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.nn.functional.mse_loss(reconstruction.double(), target.double()))
