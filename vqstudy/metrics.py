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


def fisher_ratio(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """tr(S_between) / tr(S_within): spread of the class means against the spread inside
    the classes. Collapsed embeddings (classes on top of each other) give a ratio near 0."""
    x = embeddings.double()
    mean = x.mean(0)
    between, within = 0.0, 0.0
    for c in labels.unique():
        xc = x[labels == c]
        between += len(xc) * float((xc.mean(0) - mean).pow(2).sum())
        within += float((xc - xc.mean(0)).pow(2).sum())
    return between / within if within > 0 else float("inf")


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of the centred embeddings:
    how many directions the embeddings really use (1 .. dimension)."""
    x = embeddings.double()
    s = torch.linalg.svdvals(x - x.mean(0))
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def separability(embeddings: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict:
    """How well the classes can be told apart from the (continuous) embeddings:
    held-out linear-probe accuracy (logistic regression trained on one half, scored on
    the other), silhouette score by class, Fisher ratio, and effective rank."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = embeddings.double().numpy(), labels.numpy()
    out = {"fisher_ratio": fisher_ratio(embeddings, labels), "effective_rank": effective_rank(embeddings)}
    if len(set(y.tolist())) < 2 or len(y) < 20:
        return {**out, "probe_accuracy": float("nan"), "silhouette": float("nan")}
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    out["probe_accuracy"] = float(probe.score(scaler.transform(x_test), y_test))
    out["silhouette"] = float(silhouette_score(x, y)) if x.std(0).sum() > 0 else -1.0
    return out
