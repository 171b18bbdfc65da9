"""Learning a voice conversion from parallel speech: the target's sentences spoken again by the
base voice, aligned by DTW, the MLP ensemble fitted, the kNN pool and per-phone prosody built
(`train`). The result is a `conversion.Conversion`; see that module for the method and its
measurements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from doppel.voice.conversion import (
    ALIGN_DIMS,
    PROSODY_MIN_S,
    Conversion,
    context_window,
    dtw_path,
    frame_labels,
    log_f0_quantiles,
    log_f0_stats,
    phone_offsets,
    sounding_frames,
)
from doppel.voice.tts import Timing
from doppel.voice.world import CODED_DIMS, FRAME_MS, Frames


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    hidden: int = 256
    #: None: one epoch per FRAMES_PER_EPOCH aligned frame pairs, within 10..40. Small data
    #: overfits: on 18 s of Obama, 40 epochs gave 57 % WER, 15 epochs 38 %.
    epochs: int | None = None
    batch: int = 256
    lr: float = 2e-3
    #: DTW passes: the second aligns the *mapped* base frames, which match the target better.
    align_passes: int = 2
    seed: int = 0
    #: Choose the conversion's strength by having the new voice read unseen sentences to
    #: Whisper (`validate.choose_strength`); off: full strength.
    validate: bool = True
    #: MLPs averaged in the final mapping (`Conversion.members`).
    ensemble: int = 3


def train(
    base: Sequence[Frames],
    target: Sequence[Frames],
    options: TrainOptions = TrainOptions(),
    progress: Callable[[str], None] = lambda _: None,
    base_phonemes: Sequence[Sequence[Timing]] | None = None,
) -> Conversion:
    """Learn the conversion from utterance pairs (base voice, real target) of the same text.

    With `base_phonemes` (the base voice's phone timings of each utterance), every real target
    frame in the kNN pool is labelled with the phone DTW aligns it to.
    """
    import torch

    torch.manual_seed(options.seed)
    src_all = np.concatenate([f.coded for f in base])
    tgt_all = np.concatenate([f.coded for f in target])
    src_mean, src_std = src_all.mean(0), src_all.std(0) + 1e-6
    tgt_mean, tgt_std = tgt_all.mean(0), tgt_all.std(0) + 1e-6
    src_n = [(f.coded - src_mean) / src_std for f in base]
    tgt_n = [(f.coded - tgt_mean) / tgt_std for f in target]
    # Only sounding frames teach the mapping and fill the kNN pool: silence has no voice, and
    # DTW aligns pauses of different lengths arbitrarily.
    src_on = [sounding_frames(f.coded) for f in base]
    tgt_on = [sounding_frames(f.coded) for f in target]
    pool = np.concatenate([t[on, 1:] for t, on in zip(tgt_n, tgt_on, strict=True)])
    pool = pool.astype(np.float32)
    conv = Conversion(
        src_mean,
        src_std,
        tgt_mean,
        tgt_std,
        [],
        log_f0_stats([f.f0 for f in base]),
        log_f0_stats([f.f0 for f in target]),
        pool,
        f0_quantiles=np.stack(
            [log_f0_quantiles([f.f0 for f in base]), log_f0_quantiles([f.f0 for f in target])]
        ),
    )
    if base_phonemes is not None:
        conv.phones = sorted({ph.text for utt in base_phonemes for ph in utt})
        src_labels = [
            frame_labels(utt, len(f.coded), conv.phones)
            for utt, f in zip(base_phonemes, base, strict=True)
        ]
    model = None
    for p in range(options.align_passes):
        xs, ys, labels = [], [], []
        # Per aligned sounding frame: the base voice's phone, normalised c0 of both voices,
        # and log-F0 of both where both are voiced (NaN elsewhere).
        prosody: list[np.ndarray] = []
        for i, (s, t, s_on, t_on) in enumerate(zip(src_n, tgt_n, src_on, tgt_on, strict=True)):
            # Align on the low cepstra of spectral shape, unnormalised (the mel-cepstral
            # distance): c0, the level, differs between recordings; high orders are noise.
            raw_t = t * tgt_std + tgt_mean
            raw_s = s * src_std + src_mean
            key = (
                raw_s[:, 1:]
                if model is None
                else (conv.map_coded(raw_s)[:, : CODED_DIMS - 1] * tgt_std[1:] + tgt_mean[1:])
            )
            ia, ib = dtw_path(key[:, : ALIGN_DIMS - 1], raw_t[:, 1:ALIGN_DIMS])
            keep = s_on[ia] & t_on[ib]
            xs.append(context_window(s)[ia[keep]])
            # Outputs: the shape (c1..), then the level c0.
            ys.append(np.concatenate([t[ib[keep], 1:], t[ib[keep], :1]], axis=1))
            if base_phonemes is not None:
                label = np.full(len(t), -1, dtype=np.int16)
                label[ib] = src_labels[i][ia]
                labels.append(label[t_on])
            if p < options.align_passes - 1:
                continue  # the prosody comes from the last pass's alignment only
            fa, fb = base[i].f0[ia[keep]], target[i].f0[ib[keep]]
            both = (fa > 0) & (fb > 0)
            prosody.append(
                np.stack(
                    [
                        src_labels[i][ia[keep]]
                        if base_phonemes is not None
                        else np.full(len(fa), -1),
                        s[ia[keep], 0],
                        t[ib[keep], 0],
                        np.where(both, np.log(np.where(both, fa, 1.0)), np.nan),
                        np.where(both, np.log(np.where(both, fb, 1.0)), np.nan),
                    ],
                    axis=1,
                )
            )
        x = torch.tensor(np.concatenate(xs), dtype=torch.float32)
        y = torch.tensor(np.concatenate(ys), dtype=torch.float32)
        progress(f"alignment pass {p + 1}/{options.align_passes}: {len(x)} frame pairs")
        # The last pass's mapping is an ensemble: MLPs from other seeds differ by as much as
        # 0.02 in held-out similarity; their average is steadier and no worse than the best.
        members = options.ensemble if p == options.align_passes - 1 else 1
        conv.weights, conv.members = [], members
        for m in range(members):
            torch.manual_seed(options.seed + 1000 * m)
            model = fit_mlp(x, y, options, progress)
            conv.weights += [
                t.detach().numpy().astype(np.float32).T
                if t.ndim == 2
                else t.detach().numpy().astype(np.float32)
                for t in model.parameters()
            ]
    if base_phonemes is not None:
        # From the last pass, whose alignment is the best.
        conv.pool_labels = np.concatenate(labels).astype(np.int16)
    # The target's prosody, phone by phone, from the last pass's pairs: how much louder
    # (normalised c0) and how much higher (log-F0, beyond the quantile map) the target says
    # each of the base voice's phones.
    if len(pool) * FRAME_MS / 1000 < PROSODY_MIN_S:
        return conv
    pairs = np.concatenate(prosody)
    label = pairs[:, 0].astype(np.int64)
    conv.phone_level = phone_offsets(pairs[:, 2] - pairs[:, 1], label, len(conv.phones))
    voiced = ~np.isnan(pairs[:, 3])
    rise = pairs[voiced, 4] - conv.map_log_f0(pairs[voiced, 3])
    conv.phone_pitch = phone_offsets(rise, label[voiced], len(conv.phones))
    return conv


FRAMES_PER_EPOCH = 200


def fit_mlp(x, y, options: TrainOptions, progress: Callable[[str], None]):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    epochs = options.epochs or max(10, min(40, round(len(x) / FRAMES_PER_EPOCH)))
    d_in, h = x.shape[1], options.hidden
    model = nn.Sequential(
        nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, y.shape[1])
    )
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(x)
    for epoch in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for s in range(0, n, options.batch):
            idx = perm[s : s + options.batch]
            loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            progress(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.3f}")
    return model
