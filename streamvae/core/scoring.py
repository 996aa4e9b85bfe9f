"""What the streaming core needs from a model (the ``Scorer`` protocol), and how it
reads a score that is not finite (``finite_or_worst``).

``streamvae.model.detector.VAEDetector`` implements it; the core never imports
TensorFlow, so a unit test can drive the pipeline with any object of this shape.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

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


def finite_or_worst(scores: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Scores with every non-finite one (a likelihood that under- or overflowed on values
    far outside anything the model saw) made +inf: the most anomalous score there is,
    flagged by any threshold and learned by none.

    >>> finite_or_worst(np.array([1.0, np.nan, -np.inf])).tolist()
    [1.0, inf, inf]
    """
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    return s if ok.all() else np.where(ok, s, np.inf)
