"""The face side of a replica: training-video preparation (probe, normalise, track, check),
the lower-face renderer and compositing.

`prepare.prepare` turns an uploaded training video into a `PreparedVideo`; `video` wraps
ffmpeg, `tracking` wraps MediaPipe and holds the crop and mouth measures; `renderer` is the
per-replica network and its training; `composite` pastes rendered regions back.
"""
