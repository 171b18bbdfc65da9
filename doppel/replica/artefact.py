"""A trained replica folder as render reads it (`Replica`), and its reference `Bank`.

The folder's file names are `doppel.replica.layout`'s; training writes it
(doppel.replica.training).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.face import mouth, tracking
from doppel.face import prepare as prep
from doppel.replica import layout


@dataclasses.dataclass
class Source:
    name: str
    start: int  # first frame in the prepared video
    frames: int


@dataclasses.dataclass
class Replica:
    """A trained replica folder, as render needs it."""

    folder: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> Replica:
        path = folder / layout.META
        if not path.exists():
            raise FileNotFoundError(
                f"{folder} is not a replica folder (no {layout.META}): train one with "
                "`python -m doppel replica train`"
            )
        meta = json.loads(path.read_text())
        if meta.get("format_version") != layout.FORMAT_VERSION:
            raise ValueError(
                f"{folder} holds a replica of format {meta.get('format_version')}; "
                f"this code reads {layout.FORMAT_VERSION}: train it again"
            )
        return cls(folder.resolve(), meta)

    @property
    def prepared(self) -> prep.PreparedVideo:
        return prep.PreparedVideo.load(self.folder / layout.PREPARED)

    @property
    def base_range(self) -> tuple[int, int]:
        a, b = self.meta["base"]
        return int(a), int(b)

    @property
    def idle_range(self) -> tuple[int, int] | None:
        idle = self.meta.get("idle")
        return (int(idle[0]), int(idle[1])) if idle else None

    @property
    def sources(self) -> list[Source]:
        return [Source(**s) for s in self.meta["sources"]]

    def crop_boxes(self, prepared: prep.PreparedVideo) -> np.ndarray:
        """Face crop boxes of the prepared video, smoothed within each source clip
        (`source_boxes`); replicas trained before that was done store boxes smoothed across
        the cuts, wrong by up to ~50 px on the first frames of a clip.
        """
        return source_boxes(prepared.landmarks, self.sources)

    def bank(self) -> Bank:
        """The reference bank, decoded once per process while the file is unchanged (`_BANKS`:
        ~46 MB each; decoding its JPEGs takes ~0.3 s, a tenth of a short render).
        """
        path = self.folder / layout.BANK
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _BANKS_LOCK:
            bank = _BANKS.pop(key, None)
        if bank is None:
            bank = Bank.load(path)
        with _BANKS_LOCK:
            _BANKS[key] = bank  # most recently used last
            while len(_BANKS) > BANK_CACHE:
                _BANKS.pop(next(iter(_BANKS)))
        return bank

    @property
    def voice_folder(self) -> Path | None:
        """The replica's voice profile folder (doppel.voice), None if trained without one."""
        voice = self.meta.get("voice")
        return self.folder / voice["folder"] if voice else None

    def mouth_model(self) -> mouth.MouthModel:
        return mouth.MouthModel.load(self.folder / layout.MOUTH_PT)


#: Banks kept decoded in one process (a worker renders the same few replicas again and again).
BANK_CACHE = 4
_BANKS: dict[tuple[str, int, int], Bank] = {}
_BANKS_LOCK = threading.Lock()


@dataclasses.dataclass
class Bank:
    """Reference crops of the person with their shapes (regions.choose_references)."""

    crops: np.ndarray  # [M, S, S, 3] uint8
    points: np.ndarray  # [M, P, 2]
    aligned: np.ndarray  # [M, 53, 2]
    frames: np.ndarray  # [M]
    features: np.ndarray  # [M, 512] audio features of those frames (the retrieval baseline)

    def save(self, path: Path) -> None:
        import cv2

        blobs = [
            cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            for c in self.crops
        ]
        offsets = np.cumsum([0] + [len(b) for b in blobs])
        np.savez(
            path,
            jpeg=np.concatenate(blobs).astype(np.uint8),
            offsets=offsets,
            points=self.points.astype(np.float32),
            aligned=self.aligned.astype(np.float32),
            frames=self.frames.astype(np.int64),
            features=self.features.astype(np.float16),
        )

    @classmethod
    def load(cls, path: Path) -> Bank:
        import cv2

        with np.load(path) as d:
            data = {k: d[k] for k in d.files}
        o = data["offsets"]
        crops = np.stack(
            [
                cv2.imdecode(data["jpeg"][o[i] : o[i + 1]], cv2.IMREAD_COLOR)[..., ::-1]
                for i in range(len(o) - 1)
            ]
        )
        arrays = [
            np.ascontiguousarray(crops),
            data["points"],
            data["aligned"],
            data["frames"],
            data["features"].astype(np.float32),
        ]
        for a in arrays:
            a.setflags(write=False)  # shared by the renders of a process (`Replica.bank`)
        return cls(*arrays)


def source_boxes(landmarks: np.ndarray, spans: Sequence[Source]) -> np.ndarray:
    """`tracking.crop_boxes` smoothed within each joined source only: the cut between two clips
    is no head motion, and smoothing across it pulled a clip's first and last boxes towards the
    other clip's face (a mouth pasted off the mouth: a ghost of the real one beside it).
    """
    boxes = tracking.crop_boxes(landmarks)
    for src in spans:
        a, b = src.start, min(len(landmarks), src.start + src.frames)
        if b > a:
            boxes[a:b] = tracking.crop_boxes(landmarks[a:b])
    return boxes
