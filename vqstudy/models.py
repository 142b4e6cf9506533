"""Autoencoders. The quantizer sits between ``encode`` and ``decode`` and works on the
last dimension, so every encoder returns its latents channels-last."""

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """An MLP encoder of ``depth`` hidden layers of width ``hidden`` and a decoder of its
    own width. The encoder's width is the knob of claim C2 (embeddings collapse), so
    the decoder's is separate: shrinking the encoder must not also shrink the decoder."""

    def __init__(self, in_dim: int, latent_dim: int = 2, hidden: int = 64, depth: int = 2,
                 decoder_hidden: int = 64, decoder_depth: int = 2):
        super().__init__()
        self.encoder = mlp([in_dim] + [hidden] * depth + [latent_dim])
        self.decoder = mlp([latent_dim] + [decoder_hidden] * decoder_depth + [in_dim])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
