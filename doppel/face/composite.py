"""Pasting rendered regions back into full frames, and the AI-generated disclosure mark.

The blend weight (`regions.blend_mask`) is 1 over the area the network painted and falls to 0
through a ring where the network reproduces the base frame, so the two images agree where they
meet: no seam. What residual colour offset remains between the rendered region and the base
frame (measured on that ring) is removed, smoothed over time so it cannot flicker.
"""

from __future__ import annotations

import numpy as np

from doppel.face import regions, tracking

#: Visible disclosure on every generated frame unless the owner turns it off.
MARK_TEXT = "AI-generated"
#: Container metadata of every generated video (ffmpeg -metadata arguments).
DISCLOSURE = "AI-generated synthetic media (Doppel): this person did not film this video"


def metadata_args() -> list[str]:
    return [
        "-metadata",
        f"comment={DISCLOSURE}",
        "-metadata",
        f"description={DISCLOSURE}",
        "-metadata",
        "ai_generated=true",
        "-movflags",
        "+faststart+use_metadata_tags",
    ]


class Compositor:
    """Pastes region crops into frames; keeps the colour correction's running state.

    Colour correction is a smooth offset field rather than one offset: the difference between
    the base frame and the rendered crop where the base is known (outside the hidden area) is
    spread into the hidden area by normalised convolution (an inexpensive stand-in for Poisson
    blending), so a brightness step at the hidden area's edge fades out instead of showing as
    a line. The field is smoothed over time so it cannot flicker.
    """

    def __init__(
        self,
        size: int = regions.SIZE,
        *,
        colour_smoothing: float = 0.7,
        spread: float = 0.1,
        tolerance: float = 12.0,
    ) -> None:
        self.size = size
        self.small = max(8, size // 4)
        self.sigma = spread * self.small
        self.smoothing = colour_smoothing
        #: Disagreement (8-bit levels, beyond the typical offset) at which a reference pixel
        #: counts half: colour offsets between the renderer and the frame stay well below it.
        self.tolerance = tolerance
        self._field: np.ndarray | None = None
        self._masks(regions.input_mask(size))

    def _masks(self, hidden: np.ndarray) -> None:
        """Blend weight and colour-reference area for the area taken from the renderer."""
        self.alpha = regions.blend_mask(self.size, hidden)
        self.known = np.flatnonzero((self.alpha > 0.02) & (hidden < 0.5))

    def correct(self, rendered: np.ndarray, base: np.ndarray) -> np.ndarray:
        """`rendered` plus the time-smoothed offset field towards `base` (float32)."""
        import cv2

        out = rendered.astype(np.float32)
        diff = base.astype(np.float32) - out
        # Robust weights: a reference pixel where the two images disagree by far more than the
        # typical offset shows different things (the base's collar or suit where the rendered
        # jaw is skin), not a colour offset; spread, it darkened the jaw in a smear.
        ring = diff.reshape(-1, 3)[self.known]
        weight = np.zeros(self.size * self.size, np.float32)
        if len(ring):
            far = np.abs(ring - np.median(ring, axis=0)).max(axis=1) / self.tolerance
            weight[self.known] = 1.0 / (1.0 + far * far)
        weight = weight.reshape(self.size, self.size)
        # The field is smooth: computed at a quarter of the resolution, then enlarged.
        num, den = (
            cv2.GaussianBlur(
                cv2.resize(v, (self.small, self.small), interpolation=cv2.INTER_AREA),
                (0, 0),
                self.sigma,
            )
            for v in (diff * weight[..., None], weight)
        )
        field = cv2.resize(
            num / (den[..., None] + 1e-3),
            (self.size, self.size),
            interpolation=cv2.INTER_LINEAR,
        )
        if self._field is None:
            self._field = field
        else:
            self._field = self.smoothing * self._field + (1 - self.smoothing) * field
        return np.clip(out + self._field, 0, 255)

    def paste(
        self,
        frame: np.ndarray,
        rendered: np.ndarray,
        base: np.ndarray,
        box: np.ndarray,
        hidden: np.ndarray | None = None,
        detail: np.ndarray | None = None,
    ) -> np.ndarray:
        """`frame` (modified in place and returned) with `rendered` [S, S, 3] blended in at the
        region `box`; `base` is the frame's own region crop (for the colour correction);
        `hidden` the area taken from `rendered` (`regions.paint_mask` or `frame_mask`),
        default `input_mask`; `detail` where to restore fine detail (`sharpen`), if anywhere.
        """
        if hidden is not None:
            self._masks(hidden)
        import cv2

        patch = self.correct(rendered, base)
        if detail is not None:
            patch = sharpen(patch, detail)
        to_crop = tracking.crop_matrix(box, self.size)
        to_frame = cv2.invertAffineTransform(to_crop)
        corners = (
            np.array(
                [[0, 0, 1], [self.size, 0, 1], [0, self.size, 1], [self.size, self.size, 1]],
                np.float64,
            )
            @ to_frame.T
        )
        h, w = frame.shape[:2]
        x0, y0 = (max(0, int(np.floor(v))) for v in corners.min(axis=0))
        x1, y1 = (
            min(w, int(np.ceil(corners[:, 0].max())) + 1),
            min(h, int(np.ceil(corners[:, 1].max())) + 1),
        )
        if x1 <= x0 or y1 <= y0:
            return frame
        shift = np.array(to_frame, np.float64)
        shift[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(
            patch, shift, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = cv2.warpAffine(
            self.alpha,
            shift,
            size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0.0,),
        )[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(alpha * warped + (1 - alpha) * roi + 0.5, 0, 255).astype(
            np.uint8
        )
        return frame


#: Unsharp-mask gain and Gaussian sigma (pixels at regions.SIZE) of `sharpen`: the network
#: paints lips and teeth softer than the real ones (about a third of their Laplacian variance
#: lost on Obama 08); a gain of 0.4 puts edges back without halos or added flicker.
DETAIL_GAIN = 0.4
DETAIL_SIGMA = 1.0


def sharpen(patch: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`patch` (float32 RGB, changed in place and returned) with an unsharp mask on its
    luminance, weighted by `where` ([S, S] in 0..1): the same amount added to the three
    channels, so colours do not shift. Only the box around `where` is computed.
    """
    import cv2

    x, y, w, h = cv2.boundingRect((where > 1e-3).astype(np.uint8))
    if w == 0 or h == 0:
        return patch
    sigma = DETAIL_SIGMA * patch.shape[0] / regions.SIZE
    pad = int(np.ceil(3 * sigma))
    y0, y1 = max(0, y - pad), min(patch.shape[0], y + h + pad)
    x0, x1 = max(0, x - pad), min(patch.shape[1], x + w + pad)
    block = patch[y0:y1, x0:x1]
    luma = cv2.cvtColor(block, cv2.COLOR_RGB2GRAY)
    fine = (luma - cv2.GaussianBlur(luma, (0, 0), sigma)) * where[y0:y1, x0:x1] * DETAIL_GAIN
    np.clip(block + fine[..., None], 0, 255, out=block)
    return patch


class Mark:
    """The visible "AI-generated" label, bottom right, drawn once per frame size."""

    def __init__(self, width: int, height: int) -> None:
        import cv2

        scale = max(0.4, height / 900)
        thick = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(MARK_TEXT, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        pad = round(8 * scale)
        bw, bh = tw + 2 * pad, th + base + 2 * pad
        self.x0, self.y0 = width - bw - 2 * pad, height - bh - 2 * pad
        label = np.zeros((bh, bw, 3), np.uint8)
        cv2.putText(
            label,
            MARK_TEXT,
            (pad, pad + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
        text = label[..., :1].astype(np.float32) / 255
        self.colour = label.astype(np.float32)
        # A dark translucent box under white text: readable on any background.
        self.alpha = np.maximum(0.45, text)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        h, w = self.alpha.shape[:2]
        roi = frame[self.y0 : self.y0 + h, self.x0 : self.x0 + w].astype(np.float32)
        frame[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = (
            self.alpha * self.colour + (1 - self.alpha) * roi + 0.5
        ).astype(np.uint8)
        return frame
