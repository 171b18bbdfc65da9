"""Sound in: decoding any container to model-ready arrays (`media`), voice activity (`vad`),
speech-to-text on CTranslate2 (`stt`) and its GPU twin's greedy loop (`whisper_greedy`), and the
Whisper-encoder features that drive lip-sync (`features`).

May import: `doppel.platform`, `doppel.settings`, `doppel.errors`. Never Triton, never records.
"""
