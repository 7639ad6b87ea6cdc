"""SynthTrack's poses: the 3D stick body of a person at time t, projected to 2D joints and drawing primitives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tdmi.data.synthetic.scene import _height_px, _Person, _Scene
from tdmi.keypoints import POSETRACK17


@dataclass
class _Pose:
    """One person at one instant, in image pixels."""

    joints: np.ndarray          # [17, 2]
    parts: list                 # [(depth, order, primitives)]
    extent: np.ndarray          # [4] x, y, w, h of the silhouette
    head_box: np.ndarray        # [4]
    ground: tuple[float, float, float]  # shadow centre x, y and half width


def _body_points(person: _Person, phase: float, t: float) -> dict[str, tuple[float, float, float]]:
    """Body-frame 3D points (x = the person's left, y = up, z = forward; height 1), plain floats for speed."""
    thigh_swing, knee_flex, arm_swing, elbow_base, elbow_swing = person.gait
    wf = person.width
    pts: dict[str, tuple[float, float, float]] = {}
    for side, sign, offset in (("left", 1.0, 0.0), ("right", -1.0, math.pi)):
        ph = phase + offset
        a = thigh_swing * math.sin(ph)
        k = 0.06 + knee_flex * max(0.0, math.cos(ph + 0.4)) ** 2
        hx = sign * 0.085 * wf
        ky, kz = 0.52 - 0.245 * math.cos(a), 0.245 * math.sin(a)
        ay, az = ky - 0.24 * math.cos(a - k), kz + 0.24 * math.sin(a - k)
        pts[f"{side}_hip"], pts[f"{side}_knee"] = (hx, 0.52, 0.0), (hx, ky, kz)
        pts[f"{side}_ankle"], pts[f"{side}_toe"] = (hx, ay, az), (hx, ay - 0.025, az + 0.07)
    # Keep the lower foot on the ground: this is what makes the body bob.
    lift = 0.04 - min(pts["left_ankle"][1], pts["right_ankle"][1])
    pts = {n: (x, y + lift, z) for n, (x, y, z) in pts.items()}
    hip_y = 0.52 + lift

    upper: dict[str, tuple[float, float, float]] = {
        "head_center": (0.0, 0.935, 0.0),
        "nose": (0.0, 0.925, 0.055),
        "head_bottom": (0.0, 0.872, 0.01),
        "head_top": (0.0, 0.995, -0.005),
        "left_ear": (0.05, 0.93, 0.0),
        "right_ear": (-0.05, 0.93, 0.0),
        "neck": (0.0, 0.83, 0.0),
    }
    for side, sign, offset in (("left", 1.0, math.pi), ("right", -1.0, 0.0)):
        ph = phase + offset  # an arm swings with the opposite leg
        sx, sy, sz = sign * 0.12 * wf, 0.82, 0.0
        if person.wave_side == sign:
            raise_angle = 2.35
            ux, uy, uz = sign * math.sin(raise_angle), -math.cos(raise_angle), 0.15
            beta = 0.45 * math.sin(2 * math.pi * t / person.wave_period)
            fx, fy, fz = sign * math.sin(beta + 0.15), math.cos(beta + 0.15), 0.1
        else:
            b = arm_swing * math.sin(ph)
            abduct = 0.12
            e = elbow_base + elbow_swing * max(0.0, math.sin(ph))
            ux, uy, uz = sign * math.sin(abduct), -math.cos(abduct) * math.cos(b), math.cos(abduct) * math.sin(b)
            fx, fy, fz = sign * math.sin(abduct) * 0.5, -math.cos(b + e), math.sin(b + e)
        un, fn = math.sqrt(ux * ux + uy * uy + uz * uz), math.sqrt(fx * fx + fy * fy + fz * fz)
        ex, ey, ez = sx + 0.17 * ux / un, sy + 0.17 * uy / un, sz + 0.17 * uz / un
        wx, wy, wz = ex + 0.15 * fx / fn, ey + 0.15 * fy / fn, ez + 0.15 * fz / fn
        upper[f"{side}_shoulder"], upper[f"{side}_elbow"], upper[f"{side}_wrist"] = (sx, sy, sz), (ex, ey, ez), \
            (wx, wy, wz)
        upper[f"{side}_hand"] = (wx + 0.035 * fx / fn, wy + 0.035 * fy / fn, wz + 0.035 * fz / fn)
    # Lean the upper body about the horizontal axis through the pelvis (positive = forward).
    c, s = math.cos(person.lean), math.sin(person.lean)
    for n, (x, y, z) in upper.items():
        dy = y + lift - hip_y
        pts[n] = (x, hip_y + dy * c - z * s, z * c + dy * s)
    pts["pelvis"] = (0.0, hip_y, 0.0)
    return pts


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, colour: tuple) -> tuple:
    return ("capsule", float(p0[0]), float(p0[1]), float(p1[0]), float(p1[1]), float(r0), float(r1), colour)


def _scaled(colour: tuple, gain: float) -> tuple:
    return (min(colour[0] * gain, 255.0), min(colour[1] * gain, 255.0), min(colour[2] * gain, 255.0))


def _pose(scene: _Scene, person: _Person, t: float, shake: np.ndarray) -> _Pose:
    psi = float(np.interp(t, person.grid, person.heading))
    root_x = float(np.interp(t, person.grid, person.root_x)) + shake[0]
    ground_y = float(np.interp(t, person.grid, person.ground_y))
    phase = float(np.interp(t, person.grid, person.phase))
    h = _height_px(scene, person, ground_y)
    ground_y += shake[1]
    pts = _body_points(person, phase, t)
    names = list(pts)
    c, s = math.cos(psi), math.sin(psi)
    img = np.array([(root_x + h * (x * c + z * s), ground_y - h * y) for x, y, z in pts.values()])
    P = {n: img[i] for i, n in enumerate(names)}
    D = {n: x * s - z * c for n, (x, y, z) in pts.items()}  # + = farther from the camera
    joints = img[[names.index(n) for n in POSETRACK17.names]]

    col = person.colours
    shirt, trousers, skin = col["shirt"], col["trousers"], col["skin"]
    parts: list = []

    def add(d: float, *prims) -> None:
        parts.append((d, len(parts), list(prims)))

    wf = person.width
    for side in ("left", "right"):
        leg_depth = (D[f"{side}_hip"] + D[f"{side}_knee"] + D[f"{side}_ankle"]) / 3
        lower = skin if person.shorts else trousers
        add(leg_depth,
            _capsule(P[f"{side}_ankle"], P[f"{side}_toe"], 0.024 * h, 0.02 * h, col["shoes"]),
            _capsule(P[f"{side}_knee"], P[f"{side}_ankle"], 0.042 * h, 0.03 * h, lower),
            _capsule(P[f"{side}_hip"], P[f"{side}_knee"], 0.058 * h * wf, 0.044 * h, trousers))
        arm_depth = (D[f"{side}_shoulder"] + D[f"{side}_elbow"] + D[f"{side}_wrist"]) / 3 - 0.03
        fore = skin if person.short_sleeves else shirt
        add(arm_depth,
            _capsule(P[f"{side}_shoulder"], P[f"{side}_elbow"], 0.04 * h * wf, 0.032 * h, shirt),
            _capsule(P[f"{side}_elbow"], P[f"{side}_wrist"], 0.03 * h, 0.024 * h, fore),
            ("circle", float(P[f"{side}_hand"][0]), float(P[f"{side}_hand"][1]), 0.026 * h, skin))
    # Torso: an elliptic cross-section, so its projected width shrinks in profile.
    shoulder_c = (P["left_shoulder"] + P["right_shoulder"]) / 2
    hip_c = (P["left_hip"] + P["right_hip"]) / 2
    axis = hip_c - shoulder_c
    length = max(float(np.linalg.norm(axis)), 1e-3)
    normal = np.array([-axis[1], axis[0]]) / length

    def half(a: float, b: float) -> float:
        return h * math.sqrt((a * wf * c) ** 2 + (b * s) ** 2)

    ws, ww, wh = half(0.135, 0.07), half(0.11, 0.065), half(0.11, 0.075)
    belt = shoulder_c + 0.78 * axis
    chest = [shoulder_c + normal * ws, shoulder_c + 0.5 * axis + normal * ww, belt + normal * ww,
             belt - normal * ww, shoulder_c + 0.5 * axis - normal * ww, shoulder_c - normal * ws]
    pelvis = [belt + normal * ww, hip_c + normal * wh + 0.06 * axis, hip_c - normal * wh + 0.06 * axis,
              belt - normal * ww]
    add(-0.01, _capsule(P["head_bottom"], P["neck"], 0.03 * h, 0.034 * h, skin))
    add(-0.02, ("poly", np.array(pelvis), trousers), ("poly", np.array(chest), shirt),
        *[("circle", float(p[0]), float(p[1]), 0.035 * h, shirt)
          for p in (shoulder_c + normal * (ws - 0.03 * h), shoulder_c - normal * (ws - 0.03 * h))])
    # Head: hair on the back of the skull, the face on the side the person faces (none from behind).
    centre = P["head_center"]
    rx, ry = h * 0.05 * (0.92 + 0.08 * abs(s)), h * 0.066
    head = [("ellipse", float(centre[0]), float(centre[1]), rx, ry, col["hair"])]
    frontness = c
    if frontness > -0.35:
        face_c = centre + np.array([0.22 * rx * s, 0.16 * ry])
        face_ax = (rx * (0.62 + 0.25 * max(frontness, 0.0)), ry * 0.8)
        head.append(("ellipse", float(face_c[0]), float(face_c[1]), *face_ax, skin))
        if h > 70 and frontness > 0.2:
            eye_y = centre[1] + 0.02 * ry
            for lateral in (-1, 1):
                ex = centre[0] + (lateral * 0.42 * c + 0.6 * s) * rx
                head.append(("dot", float(ex), float(eye_y), max(0.9, 0.08 * rx), _scaled(col["hair"], 0.4)))
    add(-0.06, *head)

    pts_all = img
    pad = 0.06 * h
    x0, y0 = pts_all[:, 0].min() - pad, min(pts_all[:, 1].min(), centre[1] - ry) - 1.0
    x1, y1 = pts_all[:, 0].max() + pad, pts_all[:, 1].max() + 0.03 * h
    extent = np.array([x0, y0, x1 - x0, y1 - y0])
    head_box = np.array([round(centre[0] - 0.06 * h), round(centre[1] - 0.072 * h), round(0.12 * h),
                         round(0.144 * h)], float)
    return _Pose(joints=joints, parts=parts, extent=extent, head_box=head_box,
                 ground=(root_x, ground_y, 0.17 * h * wf))


