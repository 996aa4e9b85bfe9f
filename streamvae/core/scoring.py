"""What the streaming core needs from a model: the ``Scorer`` protocol.

``streamvae.model.detector.VAEDetector`` implements it; the core never imports
TensorFlow, so a unit test can drive the pipeline with any object of this shape.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import numpy.typing as npt


class ScoreBatch(Protocol):
    score: npt.NDArray[np.float64]  # (B,) higher means more anomalous; NaN: nothing observed
    shares: npt.NDArray[np.float32] | None  # (B, F) each feature's share of the window's NLL; None without detail


class Scorer(Protocol):
    """Scores a batch of raw windows (B, W, F) in ONE call.

    ``detail=False`` may leave ``shares`` out (None); a window's score must not depend on
    it. The pipeline scores every window without detail and asks for the shares of its
    flagged windows only, in a second call."""

    version_: str | None

    @property
    def names(self) -> Sequence[str]: ...

    def score(self, X: npt.ArrayLike, detail: bool = True) -> ScoreBatch: ...
