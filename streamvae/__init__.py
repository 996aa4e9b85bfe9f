"""streamvae: streaming anomaly detection for sensor feeds with a variational autoencoder.

Importing the package is cheap: TensorFlow is loaded only by :mod:`streamvae.model`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
