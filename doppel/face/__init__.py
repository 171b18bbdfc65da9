"""The face side of a replica: training-video preparation (probe, normalise, track, check), the
audio -> mouth-shape model, the lower-face renderer and compositing.

`prepare.prepare` turns an uploaded training video into a `PreparedVideo`; `video` wraps ffmpeg,
`tracking` wraps MediaPipe and holds the crop and mouth measures; `mouth` maps audio features to
mouth shapes; `regions` holds the lower-face crop, masks, sketches and reference choice;
`renderer` is the per-replica network and its training; `composite` pastes rendered regions back.

May import: `doppel.audio`, `doppel.platform`, `doppel.settings`, `doppel.errors`.
Never Triton, never records (`doppel.domain`), never the rooms above (voice, replica, render).
"""
