"""The lip-sync study's ridge-regression baseline for audio -> mouth shape (an evaluation
baseline, not the engine: `benchmarks/quality/mouth.py` compares the mouth model with it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from doppel.face.mouth import Clip, MouthBasis, person_mean


def stack_context(features: np.ndarray, context: int) -> np.ndarray:
    """[T, D] -> [T, (2 context + 1) D]: each frame with its neighbours (edges repeated)."""
    padded = np.pad(features, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + len(features)] for i in range(2 * context + 1)], axis=1)


@dataclasses.dataclass
class RidgeMouth:
    """Ridge regression from stacked features to PCA coefficients, fitted on one person."""

    weights: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    basis: MouthBasis
    mean_shape: np.ndarray
    context: int

    @classmethod
    def fit(
        cls, clips: list[Clip], *, k: int = 12, context: int = 4, alpha: float = 1e3
    ) -> RidgeMouth:
        mean = person_mean(clips)
        basis = MouthBasis.fit(np.concatenate([c.points for c in clips]) - mean, k)
        x = np.concatenate([stack_context(c.features, context) for c in clips]).astype(np.float64)
        y = np.concatenate([basis.encode(c.points, mean) for c in clips]).astype(np.float64)
        xm, ym = x.mean(axis=0), y.mean(axis=0)
        xc = x - xm
        # Dual form: a few hundred frames against thousands of input dimensions.
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(len(xc)), y - ym)
        return cls(
            w.astype(np.float32), xm.astype(np.float32), ym.astype(np.float32), basis, mean, context
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = stack_context(features, self.context) - self.x_mean
        return self.basis.decode(x @ self.weights + self.y_mean, self.mean_shape)
