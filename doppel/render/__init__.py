"""One frame path for batch videos and live calls: decoded audio -> mouth shapes -> planned
frames -> rendered, composited frames written to a `FrameSink`.

`plan` holds the frame schedule (the replica's base frames, the listening ping-pong) and the
per-chunk plan; `frames` runs the pipeline into any `FrameSink`; `mp4` is the sink that writes an
MP4 (a live video track is another); `video` renders a whole `Audio` or a script to a file.

May import: `doppel.replica`, `doppel.triton`, `doppel.voice`, `doppel.face`, `doppel.audio`,
`doppel.platform` (not `db` or `queue`), `doppel.settings`, `doppel.errors`. Never records.
"""
