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
    """ReLU -> 3x3 conv -> ReLU -> 1x1 conv, added to the input (the VQ-VAE paper's block).
    The first ReLU must not overwrite the input (the sum needs it); the second may."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvAutoencoder(nn.Module):
    """32x32x3 images to an 8x8 grid of ``latent_dim``-vectors and back, after the VQ-VAE
    paper's CIFAR-10 model at a smaller width: two stride-2 convolutions, one residual
    block, a 1x1 projection to the latent; the decoder mirrors it. Latents are returned
    channels-last, ``(B, 8, 8, latent_dim)``, so the quantizer works on the last dimension.

    On CPU the convolutions run in the channels-last memory format (``channels_last``):
    the images are made channels-last on the way in, so every activation is, the latents
    come out contiguous (the quantizer's reshape copies nothing) and the decoder gets
    channels-last input in both phases (before, the decoder ran channels-last only behind
    the quantizer, whose tokens are contiguous, and the encoder never did). oneDNN's
    channels-last kernels are the faster ones at one thread, most of all for the last,
    3-channel transposed convolution, and no activation is converted between layouts:
    ``benchmarks/bench_training.py`` measured an autoencoder step 5-8% faster, a VQ step
    1-5% and an evaluation pass without the quantizer 13-15%. Not measured on a GPU, so
    there the layout stays as it was. The weights keep theirs (converting them measured
    no faster), so parameters, initialisation and ``state_dict`` are those of the plain
    NCHW model; outputs agree with it to float rounding. ReLUs whose input nothing else
    needs work in place."""

    def __init__(self, latent_dim: int = 16, width: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.channels_last = True  # on CPU; False: the plain NCHW computation
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            ResidualBlock(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, latent_dim, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_dim, width, 3, padding=1),
            ResidualBlock(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z.permute(0, 3, 1, 2)
        if self.channels_last and z.device.type == "cpu":
            z = z.contiguous(memory_format=torch.channels_last)  # a no-op for contiguous latents
        return self.decoder(z)
