"""The renderer's lower-face region: where it sits in the face crop, the masks that say what the
network sees, paints and blends, the target-mouth sketch, the reference warp and colour match,
and which real frames serve as references (retrieval by mouth shape).

Geometry (numpy, OpenCV) shared by training (`renderer`), rendering (`doppel.render`)
and compositing (`composite`); no torch.
"""

from __future__ import annotations

import numpy as np

from doppel.face import mouth, tracking

#: Side of the rendered square (pixels). The network is fully convolutional, but the export and
#: the Triton config fix it, so one number rules all.
SIZE = 160
#: The region within the face crop (`tracking.crop_boxes`): its side is REGION_SIDE x the face
#: crop's side, and its centre REGION_DY x that side below the face crop's centre. Covers from
#: the nostrils to below the chin with the mouth wide open.
REGION_SIDE = 0.42
REGION_DY = 0.30
CHANNELS = 7
#: Landmarks that drive the reference warp: mouth and jaw (`mouth.POINTS`), the nose base and
#: the cheeks, which carry the rest of the lower face along.
WARP_POINTS = tuple(mouth.POINTS) + (
    1,
    2,
    4,
    5,
    97,
    98,
    326,
    327,
    164,
    205,
    425,
    36,
    266,
    187,
    411,
    50,
    280,
    207,
    427,
    212,
    432,
    214,
    434,
    135,
    364,
    58,
    288,
    132,
    361,
)
_OUTER = list(range(20))
_INNER = list(range(20, 40))
_JAW = list(range(40, 53))
#: Minimum distance (frames) between a training target and its reference, so the network never
#: learns to copy a near-identical neighbour (at render time the reference never is the target).
MIN_REFERENCE_GAP = 25


# --- geometry ------------------------------------------------------------------------------------


def region_boxes(face_boxes: np.ndarray) -> np.ndarray:
    """Face crop boxes [T, 4] (cx, cy, side, angle) -> lower-face region boxes, same layout."""
    boxes = np.asarray(face_boxes, np.float64).reshape(-1, 4)
    cx, cy, side, angle = boxes.T
    dy = REGION_DY * side
    # The crop's y axis in the image is (-sin, cos) of its angle.
    out = np.column_stack(
        [cx - np.sin(angle) * dy, cy + np.cos(angle) * dy, side * REGION_SIDE, angle]
    )
    return out.astype(np.float32)


def to_region(points: np.ndarray, box: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Pixel points [..., 2] of a frame -> pixel coordinates in its region crop."""
    m = tracking.crop_matrix(box, size)
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def input_mask(size: int = SIZE) -> np.ndarray:
    """[size, size] float32: 1 where the base frame is hidden from the network (mouth, jaw,
    chin, with margin for the mouth wide open), 0 where it is shown. An ellipse: no corners
    for a seam to show at, and the jaw angles and nose stay the base frame's own.
    """
    import cv2

    mask = np.zeros((size, size), np.float32)
    s = size / 160
    # Nostrils to just below the chin (the collar stays the base frame's: a reference's collar
    # sits elsewhere relative to its jaw and smeared into the chin).
    centre, axes = (round(80 * s), round(90 * s)), (round(64 * s), round(58 * s))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, (1.0,), thickness=-1)
    return mask


#: Lower lip and chin (indices into `mouth.POINTS`): the part of the base frame's own mouth
#: that must be hidden wherever it is, or an open base mouth leaves a second chin showing.
_CHIN = list(range(0, 20)) + list(range(40 + 2, 40 + 11))


def frame_mask(base_points: np.ndarray | None, size: int = SIZE) -> np.ndarray:
    """The hidden area for one base frame: `input_mask` plus the base frame's own lips and chin
    (hull of those points in region coordinates, grown by a margin).
    """
    import cv2

    mask = input_mask(size)
    if base_points is None:
        return mask
    s = size / 160
    hull = cv2.convexHull(np.round(base_points[_CHIN]).astype(np.int32))
    own = np.zeros_like(mask)
    cv2.fillConvexPoly(own, hull, (1.0,))
    own = cv2.dilate(own, np.ones((round(11 * s), round(11 * s)), np.uint8))
    return np.maximum(mask, own)


def paint_mask(
    target_points: np.ndarray,
    base_points: np.ndarray,
    hidden: np.ndarray,
    *,
    margin: float = 8.0,
) -> np.ndarray:
    """The part of the hidden area `hidden` that compositing takes from the network: lips and
    chin of the target and of the base frame (hulls of `_CHIN` of each, region coordinates),
    grown by `margin` pixels at SIZE scale. The rest of the hidden area keeps the base frame's
    own pixels: the neck and collar below both chins (on a lowered head the hidden ellipse
    reaches well past the chin) and the corners beside the nose. The network repaints those
    from a reference taken at another moment, softer and with the reference's shadows (a dark
    smear over the collar).
    """
    import cv2

    size = hidden.shape[0]
    area = np.zeros_like(hidden)
    for points in (target_points, base_points):
        hull = cv2.convexHull(np.round(points[_CHIN]).astype(np.int32))
        cv2.fillConvexPoly(area, hull, (1.0,))
        # Grown by drawing its outline `margin` thick on each side (round joins: a disc).
        cv2.polylines(area, [hull], True, (1.0,), max(1, round(2 * margin * size / SIZE)))
    return np.minimum(hidden, area)


def lips_mask(target_points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[size, size] float32, soft: the target's lips (hull of the outer lip contour, grown a
    little): where `composite.Compositor` restores detail.
    """
    import cv2

    s = size / SIZE
    mask = np.zeros((size, size), np.float32)
    hull = cv2.convexHull(np.round(target_points[_OUTER]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (1.0,))
    k = max(1, round(5 * s))
    grown = cv2.dilate(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(grown, (0, 0), 2.0 * s)  # type: ignore[no-any-return]


def blend_mask(size: int = SIZE, core: np.ndarray | None = None) -> np.ndarray:
    """[size, size] float32 compositing weight: 1 over the area taken from the network (`core`:
    `paint_mask`, or the hidden area, by default `input_mask`), falling smoothly to 0 through a
    narrow ring around it and before the region's border. Seamless because the network paints
    its hidden area to fit the base frame shown around it, and the colour correction removes
    what offset remains at the ring.
    """
    import cv2

    s = size / 160
    core = input_mask(size) if core is None else core
    # A narrow ring (a few pixels): each pixel of it mixes the network's softer picture into
    # the frame's own, sharper pixels.
    grown = cv2.dilate(core, np.ones((round(3 * s), round(3 * s)), np.uint8))
    soft = cv2.GaussianBlur(grown, (0, 0), 2.0 * s)
    edge = np.minimum.outer(*(2 * [np.minimum(np.arange(size), np.arange(size)[::-1])]))
    fade = np.clip(edge / (6.0 * s), 0.0, 1.0)
    return np.clip(np.maximum(soft, core) * fade, 0.0, 1.0).astype(np.float32)


def sketch(mouth_points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[size, size] float32 drawing of the 53 mouth points (region coordinates): inner mouth
    filled 1.0, lips 0.5, jaw line 0.75.
    """
    import cv2

    img = np.zeros((size, size), np.float32)
    pts = np.round(mouth_points * 4).astype(np.int32)  # 2 fractional bits for cv2's shift
    cv2.fillPoly(img, [pts[_OUTER]], (0.5,), lineType=cv2.LINE_AA, shift=2)
    cv2.fillPoly(img, [pts[_INNER]], (1.0,), lineType=cv2.LINE_AA, shift=2)
    cv2.polylines(img, [pts[_JAW]], False, (0.75,), thickness=2, lineType=cv2.LINE_AA, shift=2)
    return img


def warp_to(
    image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, grid: int = 40
) -> np.ndarray:
    """Warp `image` (a region crop) so its landmarks `src_points` land on `dst_points`
    (region coordinates): piecewise-linear over a Delaunay triangulation of the target points
    and the crop's border (held in place), sampled on a coarse grid and interpolated.
    """
    import cv2
    from scipy.interpolate import LinearNDInterpolator

    size = image.shape[0]
    edge = np.linspace(0, size - 1, 9)
    border = np.concatenate(
        [
            np.column_stack([edge, np.zeros_like(edge)]),
            np.column_stack([edge, np.full_like(edge, size - 1)]),
            np.column_stack([np.zeros_like(edge), edge]),
            np.column_stack([np.full_like(edge, size - 1), edge]),
        ]
    )
    inside = np.all((dst_points > 2) & (dst_points < size - 3), axis=1)
    dst = np.concatenate([dst_points[inside], border]).astype(np.float64)
    src = np.concatenate([src_points[inside], border]).astype(np.float64)
    lin = np.linspace(0, size - 1, grid)
    gx, gy = np.meshgrid(lin, lin)
    mapped = LinearNDInterpolator(dst, src)(gx.ravel(), gy.ravel()).reshape(grid, grid, 2)
    mapped = np.where(np.isfinite(mapped), mapped, np.stack([gx, gy], axis=-1))
    full = cv2.resize(mapped.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    # Bicubic: each resampling on the way from the person's frames to the output loses detail.
    return cv2.remap(  # type: ignore[no-any-return]
        image, full[..., 0], full[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def make_input(
    base: np.ndarray,
    target_points: np.ndarray,
    reference: np.ndarray,
    reference_points: np.ndarray,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """One network input [7, S, S] uint8 from a base region crop [S, S, 3], the target warp
    points (region coordinates, `WARP_POINTS` order), and a reference crop with its points;
    `mask`: the hidden area (`frame_mask` of the base frame's points).
    """
    mask = input_mask(base.shape[0]) if mask is None else mask
    warped = match_colour(warp_to(reference, reference_points, target_points), base, mask)
    hidden = (base * (1.0 - mask[..., None])).astype(np.uint8)
    drawn = (sketch(target_points[: len(mouth.POINTS)], base.shape[0]) * 255).astype(np.uint8)
    return np.concatenate([hidden.transpose(2, 0, 1), warped.transpose(2, 0, 1), drawn[None]])


def match_colour(image: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`image` with each channel's mean and spread matched to `base` over the area the network
    sees of the base (mask 0): references come from other moments, other light; without this
    the painted mouth carries the reference's colour into the frame.

    A per-channel affine map of 8-bit values, applied as a lookup table (the statistics and the
    table in OpenCV: this runs on every frame of every render).
    """
    import cv2

    seen = (mask < 0.5).astype(np.uint8)
    mean_a, std_a = (v.ravel() for v in cv2.meanStdDev(image, mask=seen))
    mean_b, std_b = (v.ravel() for v in cv2.meanStdDev(base, mask=seen))
    gain = np.clip(std_b / np.maximum(std_a, 1.0), 0.7, 1.4)
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip((levels - mean_a) * gain + mean_b + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image), table.reshape(256, 1, 3))  # type: ignore[no-any-return]


# --- reference retrieval ---------------------------------------------------------------------


def shape_vectors(aligned: np.ndarray) -> np.ndarray:
    """Aligned mouth points [T, 53, 2] -> retrieval vectors; the lips count double (they carry
    the texture that matters) and the jaw once.
    """
    w = np.ones(len(mouth.POINTS), np.float32)
    w[: len(_OUTER) + len(_INNER)] = 2.0
    return (aligned * w[None, :, None]).reshape(len(aligned), -1).astype(np.float32)


def choose_references(
    queries: np.ndarray,
    bank: np.ndarray,
    bank_frames: np.ndarray,
    *,
    candidates: int = 8,
    switch_cost: float = 0.5,
) -> np.ndarray:
    """Reference index into `bank` for each query shape, smooth in time: a Viterbi path over
    each frame's `candidates` nearest bank shapes, where staying on consecutive bank frames
    (bank_frames[j] == bank_frames[i] + 1) is free and any other jump costs `switch_cost` times
    the median nearest distance (texture that jumps every frame flickers).
    """
    q = shape_vectors(queries)
    b = shape_vectors(bank)
    d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # [T, M]
    k = min(candidates, len(b))
    cand = np.argsort(d, axis=1)[:, :k]
    cost = np.take_along_axis(d, cand, axis=1)
    scale = float(np.median(cost[:, 0])) + 1e-9
    cost = cost / scale
    total = cost[0].copy()
    back = np.zeros((len(q), k), np.int64)
    for t in range(1, len(q)):
        prev, cur = bank_frames[cand[t - 1]], bank_frames[cand[t]]
        jump = np.where(cur[None, :] == prev[:, None] + 1, 0.0, switch_cost)
        jump = np.where(cand[t][None, :] == cand[t - 1][:, None], 0.3 * switch_cost, jump)
        step = total[:, None] + jump
        back[t] = np.argmin(step, axis=0)
        total = step[back[t], np.arange(k)] + cost[t]
    path = np.zeros(len(q), np.int64)
    path[-1] = int(np.argmin(total))
    for t in range(len(q) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return cand[np.arange(len(q)), path]


def training_references(
    aligned: np.ndarray, frames: np.ndarray, count: int = 3, gap: int = MIN_REFERENCE_GAP
) -> np.ndarray:
    """[T, count] nearest shapes for each training frame among frames at least `gap` away."""
    v = shape_vectors(aligned)
    d = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    near = np.abs(frames[:, None] - frames[None, :]) < gap
    d[near] = np.inf
    return np.argsort(d, axis=1)[:, :count]
