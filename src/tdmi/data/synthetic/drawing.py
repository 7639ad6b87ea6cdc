"""SynthTrack's rasteriser: shaded capsules and polygons, shadows, camera shake, the render of one instant."""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from tdmi.data.synthetic.options import _LIGHT, _SHAKE_MARGIN
from tdmi.data.synthetic.poses import _Pose, _pose, _scaled
from tdmi.data.synthetic.scene import _Occluder, _Scene

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fill_capsule(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, r0: float, r1: float, colour,
                  line_type: int) -> None:
    """A tapered capsule: the quad between the two end discs plus the discs (fixed-point, 1/16 px)."""
    X0, Y0, X1, Y1 = x0 * _ONE, y0 * _ONE, x1 * _ONE, y1 * _ONE
    R0, R1 = r0 * _ONE, r1 * _ONE
    length = math.hypot(X1 - X0, Y1 - Y0)
    if length > 1e-2:
        nx, ny = -(Y1 - Y0) / length, (X1 - X0) / length
        quad = np.array([[X0 + nx * R0, Y0 + ny * R0], [X1 + nx * R1, Y1 + ny * R1], [X1 - nx * R1, Y1 - ny * R1],
                         [X0 - nx * R0, Y0 - ny * R0]], np.int32)
        cv2.fillConvexPoly(img, quad, colour, line_type, _SHIFT)
    cv2.circle(img, (int(X0), int(Y0)), int(R0), colour, -1, line_type, _SHIFT)
    cv2.circle(img, (int(X1), int(Y1)), int(R1), colour, -1, line_type, _SHIFT)


def _draw_primitive(img: np.ndarray, idmap: Optional[np.ndarray], prim: tuple, entity_id: int, shaded: bool) -> None:
    kind = prim[0]
    aa = cv2.LINE_AA
    if kind == "capsule":
        _, x0, y0, x1, y1, r0, r1, c = prim
        if shaded and max(r0, r1) >= 2.5:
            # Cylinder shading: dark rim, mid body shifted toward the light, narrow highlight.
            length = max(math.hypot(x1 - x0, y1 - y0), 1e-3)
            nx, ny = -(y1 - y0) / length, (x1 - x0) / length
            if nx * _LIGHT[0] + ny * _LIGHT[1] < 0:
                nx, ny = -nx, -ny
            _fill_capsule(img, x0, y0, x1, y1, r0, r1, _scaled(c, 0.62), aa)
            for offset, radius, gain in ((0.2, 0.72, 0.9), (0.42, 0.3, 1.12)):
                _fill_capsule(img, x0 + nx * offset * r0, y0 + ny * offset * r0, x1 + nx * offset * r1,
                              y1 + ny * offset * r1, radius * r0, radius * r1, _scaled(c, gain), aa)
        else:
            _fill_capsule(img, x0, y0, x1, y1, r0, r1, _scaled(c, 0.85), aa)
        if idmap is not None:
            _fill_capsule(idmap, x0, y0, x1, y1, r0, r1, entity_id, cv2.LINE_8)
    elif kind == "poly":
        _, pts, c = prim
        fixed = np.round(pts * _ONE).astype(np.int32)
        cv2.fillPoly(img, [fixed], _scaled(c, 0.74 if shaded else 0.85), aa, _SHIFT)
        if shaded:
            centre = pts.mean(axis=0)
            size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
            for shrink, gain, shift in ((0.82, 0.86, 0.05), (0.55, 0.97, 0.1)):
                inner = centre + (pts - centre) * shrink + np.array(_LIGHT) * (shift * size)
                cv2.fillPoly(img, [np.round(inner * _ONE).astype(np.int32)], _scaled(c, gain), aa, _SHIFT)
        if idmap is not None:
            cv2.fillPoly(idmap, [fixed], entity_id, cv2.LINE_8, _SHIFT)
    elif kind in ("circle", "dot"):
        _, x, y, r, c = prim
        centre, radius = (int(x * _ONE), int(y * _ONE)), max(1, int(r * _ONE))
        cv2.circle(img, centre, radius, _scaled(c, 0.9 if kind == "circle" else 1.0), -1, aa, _SHIFT)
        if idmap is not None and kind == "circle":
            cv2.circle(idmap, centre, radius, entity_id, -1, cv2.LINE_8, _SHIFT)
    elif kind == "ellipse":
        _, x, y, ax, ay, c = prim
        centre, axes = (int(x * _ONE), int(y * _ONE)), (max(1, int(ax * _ONE)), max(1, int(ay * _ONE)))
        cv2.ellipse(img, centre, axes, 0, 0, 360, _scaled(c, 0.8), -1, aa, _SHIFT)
        if shaded and ax > 3:
            highlight = (int((x + _LIGHT[0] * ax * 0.25) * _ONE), int((y + _LIGHT[1] * ay * 0.25) * _ONE))
            cv2.ellipse(img, highlight, (int(axes[0] * 0.6), int(axes[1] * 0.6)), 0, 0, 360, _scaled(c, 1.0), -1, aa,
                        _SHIFT)
        if idmap is not None:
            cv2.ellipse(idmap, centre, axes, 0, 0, 360, entity_id, -1, cv2.LINE_8, _SHIFT)


def _draw_shadow(img: np.ndarray, x: float, y: float, half_width: float) -> None:
    hh = max(1.0, half_width * 0.18)
    x0, x1 = int(max(0, x - half_width - 2)), int(min(img.shape[1], x + half_width + 3))
    y0, y1 = int(max(0, y - hh - 2)), int(min(img.shape[0], y + hh + 3))
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    dark = roi.copy()
    cv2.ellipse(dark, (int((x - x0) * _ONE), int((y - y0) * _ONE)), (int(half_width * _ONE), int(hh * _ONE)), 0, 0, 360,
                (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(roi, 0.6, dark, 0.4, 0.0, dst=roi)


def _shake_at(scene: _Scene, t: float) -> np.ndarray:
    return np.array([round(float(np.interp(t, scene.shake_grid, scene.shake[:, a]))) for a in range(2)], float)


def _occluder_x(occ: _Occluder, t: float) -> float:
    return occ.x_at + occ.vx * (t - occ.t_at)


def _background_at(scene: _Scene, t: float) -> np.ndarray:
    """The background canvas at time ``t``: the static one, or (counterfactual ``background`` variant) panned by
    whole pixels with wrap-around and darkened by a drifting texture. uint8 ``[H + 2m, W + 2m, 3]``."""
    motion = scene.background_motion
    if motion is None:
        return scene.background
    panned = np.roll(scene.background, int(round(motion.pan_px_per_frame * t)), axis=1)
    vx, vy = motion.texture_velocity
    texture = np.roll(motion.texture, (int(round(vy * t)), int(round(vx * t))), axis=(0, 1))
    shade = 1.0 - motion.strength * texture[..., None]
    return np.clip(panned.astype(np.float32) * shade, 0, 255).astype(np.uint8)


def _render(scene: _Scene, t: float, with_ids: bool) -> tuple[np.ndarray, Optional[np.ndarray], list[_Pose]]:
    """Render the scene at time ``t`` (frames). Returns BGR image, entity-id map (or None), poses of the people."""
    w, h, m = scene.width, scene.height, _SHAKE_MARGIN
    shake = _shake_at(scene, t)
    dx, dy = int(shake[0]), int(shake[1])
    img = _background_at(scene, t)[m - dy:m - dy + h, m - dx:m - dx + w].copy()
    idmap = np.zeros((h, w), np.uint8) if with_ids else None
    poses = [_pose(scene, p, t, shake) for p in scene.people]
    # Painter's order: farther ground contact (smaller y) first.
    items: list[tuple[float, int, object]] = []
    for person, pose in zip(scene.people, poses):
        items.append((pose.ground[1], person.entity_id, (person, pose)))
    for occ in scene.occluders:
        items.append((occ.ground_y + shake[1], occ.entity_id, occ))
    items.sort(key=lambda item: (item[0], item[1]))
    for _, entity_id, obj in items:
        if isinstance(obj, _Occluder):
            ph, pw = obj.patch.shape[:2]
            x0 = int(round(_occluder_x(obj, t) + shake[0]))
            y0 = int(round(obj.ground_y + shake[1])) - ph
            xa, xb, ya, yb = max(x0, 0), min(x0 + pw, w), max(y0, 0), min(y0 + ph, h)
            if xa < xb and ya < yb:
                img[ya:yb, xa:xb] = obj.patch[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.uint8)
                if idmap is not None:
                    idmap[ya:yb, xa:xb] = entity_id
            continue
        person, pose = obj
        if not person.is_crowd:
            _draw_shadow(img, *pose.ground)
        shaded = not person.is_crowd
        for _, _, prims in sorted(pose.parts, key=lambda part: (-part[0], part[1])):
            for prim in prims:
                _draw_primitive(img, idmap, prim, entity_id, shaded)
    return img, idmap, poses


