"""Every file and tensor name of a replica folder, spelled once.

A replica is a folder:

    replica.json     what was trained, from what, how long each step took, base/idle ranges
    prepared/        the checked 25 fps training video, its audio and per-frame tracking
    mouth.pt/.onnx   audio features -> mouth shape, adapted to this person (doppel.face.mouth)
    renderer.pt/.onnx  lower-face renderer trained on this person's frames (face.renderer)
    renderer.int8.onnx the same graph quantized to 8-bit (served on CPU; absent when it did not
                     match the float graph closely enough)
    bank.npz         the person's region crops with their shapes: render-time references
    voice/           the person's voice profile (doppel.voice), absent when trained without one

The platform keeps it as `model/` inside the replica's own folder (`MODEL_FOLDER`), beside the
uploads. Training, serving (Triton's `talking_head` and `mouth_motion`), export and render read
these names from here.
"""

from __future__ import annotations

from doppel.face.regions import SIZE

#: What `Replica.load` reads; written last by training, so its presence means "trained".
META = "replica.json"
#: Version of `META`'s layout this code reads and writes.
FORMAT_VERSION = 1
PREPARED = "prepared"
MOUTH_PT = "mouth.pt"
MOUTH_ONNX = "mouth.onnx"
RENDERER_PT = "renderer.pt"
RENDERER_ONNX = "renderer.onnx"
#: The renderer quantized to 8 bits, written by training next to the float graph when it
#: reproduces real frames about as well (doppel.replica.onnx.quantize_renderer): about 1.6 times
#: as fast on the CPU.
RENDERER_INT8 = "renderer.int8.onnx"
BANK = "bank.npz"
#: The voice profile's folder (doppel.voice.profile), recorded in `META` as `voice.folder`.
VOICE = "voice"
#: Training's scratch space (joined clips, the voice child's job); not needed to render.
WORK = "work"
#: The trained replica's folder inside a platform replica's folder (sources/ beside it).
MODEL_FOLDER = "model"

# --- tensors of the per-replica graphs (and of Triton's models that serve them) ---------------

#: Renderer: "INPUT" uint8 [B, 7, S, S] -> "IMAGE" uint8 [B, 3, S, S].
RENDERER_INPUT = "INPUT"
RENDERER_OUTPUT = "IMAGE"
#: Mouth: "FEATURES" float32 [1, T, 512] -> "POINTS" float32 [1, T, 53, 2].
MOUTH_INPUT = "FEATURES"
MOUTH_OUTPUT = "POINTS"
#: Triton's per-replica models: the replica's absolute folder, one bytes element a request.
REPLICA_INPUT = "REPLICA"
#: The renderer's square side (doppel.face.regions.SIZE), fixed by the export and the config.
IMAGE_SIZE = SIZE
INPUT_CHANNELS = 7
OUTPUT_CHANNELS = 3
FEATURE_DIM = 512
MOUTH_POINTS = 53
