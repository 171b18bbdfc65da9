"""The face side of a replica: training-video preparation (probe, normalise, track, check).

`prepare.prepare` turns an uploaded training video into a `PreparedVideo`; `video` wraps
ffmpeg, `tracking` wraps MediaPipe and holds the crop and mouth measures.
"""

from doppel.face.prepare import PreparedVideo, PrepareOptions, prepare

__all__ = ["PrepareOptions", "PreparedVideo", "prepare"]
