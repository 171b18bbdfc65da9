"""The GPU `stt`: Whisper base as two TensorRT engines (whisper_trt style), from the same
CTranslate2 weights the CPU path serves.

`python -m export.stt_trt --out DIR` (GPU only) exports the encoder and the decoder to ONNX,
builds FP16 engines with the specs' profiles, checks both against PyTorch, and writes
`stt_encoder` / `stt_decoder` (tensorrt_plan) plus a BLS `stt` that runs the greedy loop of
`doppel.audio.whisper_greedy` over them. On the CPU the PyTorch modules and the loop are tested.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio.features import N_LAYER, mel_windows, read_ctranslate2, whisper_encoder
from doppel.platform import weights
from export.spec import ModelSpec, TensorSpec, render_config

N_VOCAB, N_TEXT_CTX, DIM, N_HEAD = 51865, 448, 512, 8

ENCODER_SPEC = ModelSpec(
    name="stt_encoder",
    description="Whisper base encoder: 30 s log-mel window -> 1500 x 512 states (TensorRT).",
    inputs=(TensorSpec("MEL", "float32", (80, 3000)),),
    outputs=(TensorSpec("STATES", "float32", (1500, DIM)),),
    max_batch_size=8,
    max_queue_delay_us=2000,
)
DECODER_SPEC = ModelSpec(
    name="stt_decoder",
    description="Whisper base decoder without a KV cache (whisper_trt style): tokens so far and\n"
    "encoder states -> next-token logits.",
    inputs=(
        TensorSpec(
            "TOKENS",
            "int64",
            ("tokens",),
            min={"tokens": 1},
            opt={"tokens": 32},
            max={"tokens": N_TEXT_CTX},
        ),
        TensorSpec("STATES", "float32", (1500, DIM)),
    ),
    outputs=(TensorSpec("LOGITS", "float32", (N_VOCAB,)),),
    max_batch_size=8,
    max_queue_delay_us=500,
)


def decoder_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """Whisper base's decoder weights from CTranslate2, named as `whisper.model.TextDecoder`'s."""
    w = {
        k.removeprefix("decoder/"): v.astype(np.float32)
        for k, v in read_ctranslate2(folder / "model.bin", "decoder/").items()
        if v.ndim
    }
    sd = {
        "token_embedding.weight": w["embeddings/weight"],
        "positional_embedding": w["position_encodings/encodings"],
        "ln.weight": w["layer_norm/gamma"],
        "ln.bias": w["layer_norm/beta"],
    }
    for i in range(N_LAYER):
        s, d = f"layer_{i}/", f"blocks.{i}."
        q, k, v = np.split(w[s + "self_attention/linear_0/weight"], 3)
        qb, _, vb = np.split(w[s + "self_attention/linear_0/bias"], 3)
        ck, cv = np.split(w[s + "attention/linear_1/weight"], 2)
        _, cvb = np.split(w[s + "attention/linear_1/bias"], 2)
        sd |= {
            d + "attn_ln.weight": w[s + "self_attention/layer_norm/gamma"],
            d + "attn_ln.bias": w[s + "self_attention/layer_norm/beta"],
            d + "attn.query.weight": q,
            d + "attn.query.bias": qb,
            d + "attn.key.weight": k,
            d + "attn.value.weight": v,
            d + "attn.value.bias": vb,
            d + "attn.out.weight": w[s + "self_attention/linear_1/weight"],
            d + "attn.out.bias": w[s + "self_attention/linear_1/bias"],
            d + "cross_attn_ln.weight": w[s + "attention/layer_norm/gamma"],
            d + "cross_attn_ln.bias": w[s + "attention/layer_norm/beta"],
            d + "cross_attn.query.weight": w[s + "attention/linear_0/weight"],
            d + "cross_attn.query.bias": w[s + "attention/linear_0/bias"],
            d + "cross_attn.key.weight": ck,
            d + "cross_attn.value.weight": cv,
            d + "cross_attn.value.bias": cvb,
            d + "cross_attn.out.weight": w[s + "attention/linear_2/weight"],
            d + "cross_attn.out.bias": w[s + "attention/linear_2/bias"],
            d + "mlp_ln.weight": w[s + "ffn/layer_norm/gamma"],
            d + "mlp_ln.bias": w[s + "ffn/layer_norm/beta"],
            d + "mlp.0.weight": w[s + "ffn/linear_0/weight"],
            d + "mlp.0.bias": w[s + "ffn/linear_0/bias"],
            d + "mlp.2.weight": w[s + "ffn/linear_1/weight"],
            d + "mlp.2.bias": w[s + "ffn/linear_1/bias"],
        }
    return sd


def modules(folder: Path) -> tuple[Any, Any]:
    """(encoder, decoder) PyTorch modules with the export signatures of the two specs."""
    import torch
    from whisper.model import TextDecoder

    decoder = TextDecoder(N_VOCAB, N_TEXT_CTX, DIM, N_HEAD, N_LAYER)
    decoder.load_state_dict({k: torch.from_numpy(v) for k, v in decoder_state_dict(folder).items()})

    class NextToken(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            return self.inner(tokens, states)[:, -1, :]

    return whisper_encoder(folder).eval(), NextToken(decoder).eval()


def torch_runners(folder: Path) -> tuple[Any, Any]:
    import torch

    encoder, decoder = modules(folder)

    def encode(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return encoder(torch.from_numpy(mel)).numpy()

    def decode(tokens: np.ndarray, states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decoder(torch.from_numpy(tokens), torch.from_numpy(states)).numpy()

    return encode, decode


def build_gpu_repository(models_dir: Path, out: Path, speech: np.ndarray) -> None:
    """Export, build and check both engines; write the GPU repository's stt models (GPU only)."""
    from doppel.platform.onnx_export import check_parity
    from export.tensorrt import build_engine, engine_outputs, require_gpu

    require_gpu()
    folder = weights.model_dir(models_dir, "whisper-base")
    encoder, decoder = modules(folder)
    mel = mel_windows(speech)[:1]
    states = ENCODER_SPEC.torch_outputs(encoder, {"MEL": mel})["STATES"]
    tokens = np.array([[50258, 50259, 50359, 50363]], dtype=np.int64)
    for spec, module, sample in (
        (ENCODER_SPEC, encoder, {"MEL": mel}),
        (DECODER_SPEC, decoder, {"TOKENS": tokens, "STATES": states}),
    ):
        onnx = spec.export_onnx(module, sample, models_dir / "onnx" / f"{spec.name}.onnx")
        plan = build_engine(onnx, spec, out / spec.name / "1" / "model.plan")
        (out / spec.name / "config.pbtxt").write_text(render_config(spec, "gpu"))
        reference = spec.torch_outputs(module, sample)
        check_parity(reference, engine_outputs(plan, sample), "TensorRT fp16", 5e-2, 5e-2)
    # The BLS `stt` that drives both engines; the CPU config's interface, on a GPU instance.
    import shutil

    (out / "stt" / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        Path(__file__).parent / "gpu_models" / "stt" / "model.py", out / "stt" / "1" / "model.py"
    )
    cpu_config = (
        Path(__file__).parents[1] / "model_repository" / "stt" / "config.pbtxt"
    ).read_text()
    (out / "stt" / "config.pbtxt").write_text(cpu_config.replace("KIND_CPU", "KIND_GPU"))


def main(argv: list[str] | None = None) -> int:
    import os

    from doppel.settings import models_dir_from_env
    from export.samples import speech
    from export.tensorrt import GpuUnavailable

    parser = argparse.ArgumentParser(prog="python -m export.stt_trt")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    models_dir = models_dir_from_env(os.environ)
    try:
        build_gpu_repository(models_dir, args.out, speech())
    except GpuUnavailable as exc:
        print(f"GPU target unavailable here: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
