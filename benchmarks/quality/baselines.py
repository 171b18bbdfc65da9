"""The talking-head evaluation's baselines (issue 4), as `Painter`s for `doppel.render.video`:
rendered through the same plan, the same compositing and the same MP4 as the engine, so the
figures compare only what paints the mouth.

* `static`: the base frames, mouth untouched;
* `retrieval`: the training frame whose audio features are nearest, pasted as it is;
* `warp`: the warped, colour-matched reference alone, without the network (an ablation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doppel.face import composite, regions
from doppel.render.frames import Engine, NeuralPainter, Painter
from doppel.render.plan import Plan
from doppel.replica.artefact import Bank


class StaticPainter:
    """Base frames as they are (only the disclosure mark is added)."""

    shaped = False
    banked = False

    def references(
        self, aligned: np.ndarray | None, bank: Bank | None, features: np.ndarray
    ) -> np.ndarray | None:
        return None

    def inputs(self, plan: Plan, crops: list[np.ndarray], bank: Bank | None) -> np.ndarray | None:
        return None

    async def faces(self, engine: Engine, replica: Path, inputs: np.ndarray) -> np.ndarray:
        raise AssertionError("static paints nothing")

    def paste(
        self,
        comp: composite.Compositor,
        frame: np.ndarray,
        i: int,
        plan: Plan,
        crops: list[np.ndarray],
        faces: np.ndarray | None,
        bank: Bank | None,
    ) -> None:
        pass


class RetrievalPainter(StaticPainter):
    """The training frame whose audio features are nearest, pasted as it is."""

    banked = True

    def references(
        self, aligned: np.ndarray | None, bank: Bank | None, features: np.ndarray
    ) -> np.ndarray | None:
        assert bank is not None
        f = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-6)
        g = bank.features / (np.linalg.norm(bank.features, axis=1, keepdims=True) + 1e-6)
        return np.argmax(f @ g.T, axis=1)  # type: ignore[no-any-return]

    def paste(
        self,
        comp: composite.Compositor,
        frame: np.ndarray,
        i: int,
        plan: Plan,
        crops: list[np.ndarray],
        faces: np.ndarray | None,
        bank: Bank | None,
    ) -> None:
        assert bank is not None and plan.references is not None
        reference = bank.crops[plan.references[i]]
        hidden = regions.frame_mask(plan.bases[i])
        comp.paste(frame, reference, crops[i], plan.regions[i], hidden)


class WarpPainter(NeuralPainter):
    """The renderer's input without the renderer: its warped, colour-matched reference."""

    async def faces(self, engine: Engine, replica: Path, inputs: np.ndarray) -> np.ndarray:
        return inputs[:, 3:6].transpose(0, 2, 3, 1)


#: The evaluation's methods by name: the engine (`neural`) and its baselines.
METHODS: dict[str, type[Painter]] = {
    "neural": NeuralPainter,
    "static": StaticPainter,
    "retrieval": RetrievalPainter,
    "warp": WarpPainter,
}


def painter(method: str) -> Painter:
    """The `Painter` of `method` (one of `METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}")
    return METHODS[method]()
