"""A replica's own voice: enrolment from its training speech (`profile.train`) and cloned
synthesis (`clone.ClonedVoice`): a base TTS voice converted frame by frame on WORLD's time grid,
so the base voice's word and phoneme timings hold for the cloned audio.

Modules: `tts` (Piper on ONNX Runtime, with word timings), `phonemes` (espeak-ng -> Piper ids),
`enrol` (speech checks, transcripts, speaker embedding), `base_voices` (Piper, Festival), `world`
(vocoder), `conversion` (the learned mapping), `loudness` (BS.1770), `profile` (the stored
profile), `clone` (text -> speech), `serving` (the logic behind Triton's `voice` models).

May import: `doppel.face`, `doppel.audio`, `doppel.platform`, `doppel.settings`, `doppel.errors`.
Never Triton's client (`serving` runs inside Triton; on the platform enrolment is handed a
`doppel.triton.TritonTranscriber` from above), never records, never replica, render or live.
"""
