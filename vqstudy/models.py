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


class ResidualBlock(nn.Module):
    """ReLU -> 3x3 conv -> ReLU -> 1x1 conv, added to the input (the VQ-VAE paper's block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvAutoencoder(nn.Module):
    """32x32x3 images to an 8x8 grid of ``latent_dim``-vectors and back, after the VQ-VAE
    paper's CIFAR-10 model at a smaller width: two stride-2 convolutions, one residual
    block, a 1x1 projection to the latent; the decoder mirrors it. Latents are returned
    channels-last, ``(B, 8, 8, latent_dim)``, so the quantizer works on the last dimension."""

    def __init__(self, latent_dim: int = 16, width: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            ResidualBlock(width), nn.ReLU(),
            nn.Conv2d(width, latent_dim, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_dim, width, 3, padding=1),
            ResidualBlock(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.permute(0, 3, 1, 2))
