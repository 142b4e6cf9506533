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
    return ratio(covariance_trace(tokens), covariance_trace(embeddings))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN where the denominator is 0: a spread relative to
    embeddings that do not vary at all (an encoder whose every output died to one point,
    as a learning rate ten times C3's does) is undefined, and the run must still finish
    and be stored with its other metrics."""
    return numerator / denominator if denominator else float("nan")


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


# --- One vector per example, and linear probes on it (chapters cifar10_capacity and
# token_probe): what a linear classifier can read about the class from each representation.

def pool_positions(z: torch.Tensor) -> torch.Tensor:
    """One vector per example: the mean of its latents over its positions (the conv
    model's 8x8 grid, ``(N, 8, 8, D)``); a per-example ``(N, D)`` is returned unchanged.
    An image's class belongs to the whole image, not to one patch, so the per-image
    probes read the mean."""
    return z.reshape(z.shape[0], -1, z.shape[-1]).mean(1)


def bag_of_tokens(indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Token ids ``(N, positions...)`` -> ``(N, K)`` counts of each token in each example:
    the discrete representation with the positions forgotten. With one position per
    example (the MLP) a row is the one-hot token id."""
    idx = indices.reshape(indices.shape[0], -1).long()
    if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < num_tokens):
        raise ValueError(f"token ids must be in 0..{num_tokens - 1} (num_tokens={num_tokens}), "
                         f"got ids from {int(idx.min())} to {int(idx.max())}")
    bag = torch.zeros(idx.shape[0], num_tokens, dtype=torch.float64)
    return bag.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def linear_probe(features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """Held-out accuracy of a linear classifier of ``labels`` from ``features`` (N, F):
    the probe of :func:`separability` (standardised features, logistic regression fitted
    on a stratified half, scored on the other half, the same split for the same seed),
    so that accuracies on embeddings, token vectors and token ids compare. NaN when there
    is nothing to tell apart (one class, or fewer than 20 examples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if len(features) != len(labels):
        raise ValueError(f"features has {len(features)} rows but labels has {len(labels)}: one label per row")
    x, y = features.reshape(len(features), -1).double().numpy(), labels.numpy()
    if len(set(y.tolist())) < 2 or len(y) < 20:
        return float("nan")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    return float(probe.score(scaler.transform(x_test), y_test))


def token_probes(embeddings: torch.Tensor, quantized: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor,
                 num_tokens: int, seed: int = 0) -> dict:
    """The same linear probe of the class on three representations of each example:
    ``probe_token_accuracy`` on its bag of tokens (the one-hot token id when an example
    has one position), ``probe_quantized_accuracy`` on its token vectors and
    ``probe_embedding_accuracy`` on its continuous embeddings (both averaged over the
    positions). ``embeddings``, ``quantized``: ``(N, ..., D)``; ``indices``: ``(N, ...)``.
    A gap between the last and the first is class information quantization lost."""
    return {"probe_token_accuracy": linear_probe(bag_of_tokens(indices, num_tokens), labels, seed),
            "probe_quantized_accuracy": linear_probe(pool_positions(quantized), labels, seed),
            "probe_embedding_accuracy": linear_probe(pool_positions(embeddings), labels, seed)}
