"""A replica as the engine knows it: a folder of trained artefacts for one person.

`layout` names every file and tensor of the folder once; `artefact` loads it (`Replica`, the
frame `Bank`); `training` turns training videos into that folder as named steps that report
typed `Progress`, side by side through `concurrent`; `onnx` exports, checks parity and quantises
the per-replica graphs; `voice_child` runs the voice enrolment in its own process; `consent`
hears a person's spoken consent; `serving` is the logic behind Triton's per-replica models
(never imports Triton).

May import: `doppel.triton`, `doppel.voice`, `doppel.face`, `doppel.audio`, `doppel.platform`
(not `db` or `queue`), `doppel.settings`, `doppel.errors`. Never records (`doppel.domain`).
"""
