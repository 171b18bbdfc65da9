import json

import numpy as np

from doppel.settings import Settings
from doppel.triton import TritonClient


async def test_speech_features_returns_audio_timings_and_frame_features(settings: Settings) -> None:
    client = TritonClient(settings.triton_grpc_url)
    try:
        text = "Hello there. Doppel speaks and moves its lips in time."
        out = await client.infer(
            "speech_features",
            {"TEXT": np.array([text.encode()], dtype=np.object_)},
            ["AUDIO", "SAMPLE_RATE", "TIMINGS", "FEATURES"],
        )
    finally:
        await client.close()
    rate = int(out["SAMPLE_RATE"].reshape(-1)[0])
    audio = out["AUDIO"].reshape(-1)
    duration = len(audio) / rate
    assert rate == 22050 and 2.0 < duration < 8.0
    assert np.abs(audio).max() > 0.05  # speech, not silence
    features = out["FEATURES"]
    assert features.shape[1] == 512
    assert abs(features.shape[0] - duration * 25) <= 1  # one feature per 25 fps video frame
    assert np.isfinite(features).all() and features.std() > 0
    timings = json.loads(out["TIMINGS"].reshape(-1)[0])
    words = [w["word"].lower().strip(".,") for w in timings["words"]]
    assert words[:2] == ["hello", "there"]
    assert timings["words"][-1]["end"] <= duration + 0.05
