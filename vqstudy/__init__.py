"""vqstudy: a thin library behind a reproducible study of collapse in vector quantization.

One idea a module: ``data`` (synthetic mixtures, CIFAR-10), ``models`` (autoencoders),
``quantizer`` (VQ layer and K-means), ``training`` (one config, one ``train``),
``metrics``, ``plots``, ``params`` (notebook parameters and profiles), ``verdict``
(claim checks) and ``runner`` (papermill + Jupyter Book).
"""

__version__ = "0.1.0"
