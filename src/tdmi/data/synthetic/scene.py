"""SynthTrack's scene model: people (body proportions, gaits, actions), occluders, crowds and backgrounds."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from tdmi.data.synthetic.options import _SHAKE_MARGIN, SynthOptions


def _bgr(hue: float, sat: float, val: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(float(hue) % 1.0, min(max(float(sat), 0.0), 1.0), min(max(float(val), 0.0), 1.0))
    return np.array([b * 255.0, g * 255.0, r * 255.0])


_SKIN_TONES = ((0.07, 0.35, 0.96), (0.07, 0.45, 0.85), (0.06, 0.55, 0.70), (0.06, 0.60, 0.52), (0.05, 0.55, 0.38),
               (0.08, 0.30, 0.92))
_HAIR_COLOURS = ((0.08, 0.6, 0.12), (0.07, 0.7, 0.30), (0.10, 0.6, 0.55), (0.12, 0.45, 0.80), (0.0, 0.0, 0.55),
                 (0.02, 0.7, 0.40))
_TROUSER_COLOURS = ((0.60, 0.55, 0.45), (0.62, 0.30, 0.20), (0.0, 0.0, 0.15), (0.11, 0.35, 0.62), (0.0, 0.0, 0.45),
                    (0.33, 0.35, 0.35))


@dataclass
class _Person:
    """Appearance, gait and precomputed trajectory of one person (body units: height 1, y up)."""

    entity_id: int
    track_id: int
    is_crowd: bool
    action: str
    size: float                 # height multiplier at a given ground depth
    width: float                # lateral body scale
    gait: tuple[float, float, float, float, float]   # thigh swing, knee flex, arm swing, elbow base, elbow swing
    lean: float
    wave_side: int              # +1 left arm waves, -1 right arm, 0 none
    wave_period: float
    colours: dict
    short_sleeves: bool
    shorts: bool
    grid: np.ndarray            # [G] fine time grid (frames)
    heading: np.ndarray         # [G] psi, 0 = facing the camera, +pi/2 = facing image right
    root_x: np.ndarray          # [G] image x of the pelvis
    ground_y: np.ndarray        # [G] image y of the feet
    phase: np.ndarray           # [G] gait phase (radians)
    annotated: bool = True      # False: a counterfactual distractor (drawn like anyone, never labelled)


@dataclass
class _Occluder:
    entity_id: int
    kind: str                   # "pole" or "box"
    patch: np.ndarray           # float32 [h, w, 3]
    x_at: float                 # left edge at time t_at
    t_at: float
    vx: float
    ground_y: float


@dataclass
class _Scene:
    width: int
    height: int
    frames: int
    horizon: float
    persp: float                # person height in px per px of ground_y below the horizon
    background: np.ndarray      # uint8 [H + 2m, W + 2m, 3]
    noise: np.ndarray           # int16 [H + 32, W + 32, 3] sensor-noise tile
    people: list[_Person]       # annotatable people first (track ids 0..P-1), then the crowd
    occluders: list[_Occluder]
    exposure: float             # fraction of the frame interval the shutter is open
    shake_grid: np.ndarray      # [G] fine time grid
    shake: np.ndarray           # [G, 2] camera offset (px)
    summary: dict
    max_substeps: int = 8       # most sub-frame renders averaged into a blurred frame
    background_motion: Optional["_BackgroundMotion"] = None   # counterfactual variant "background" only


@dataclass
class _BackgroundMotion:
    """A slow camera pan of the background layer and a texture drifting over it (people stay where they are, as
    when a camera follows them), for the counterfactual ``background`` variant."""

    pan_px_per_frame: float     # horizontal pan of the background canvas
    texture: np.ndarray         # float32 [H + 2m, W + 2m] in [0, 1], e.g. moving foliage shadows
    texture_velocity: tuple[float, float]   # px per frame (x, y)
    strength: float             # how much the texture darkens the background (0..1)


STREAMS = {"layout": 0, "background": 1, "noise": 2, "distractor": 3, "camera": 4, "occluder": 5, "crowd": 6,
           "background_motion": 7, "person": 10}
"""Independent random streams of a scene (version >= 2): each entity draws only from its own, so toggling one
element (a distractor, the crowd, the background's motion) leaves every other element exactly as it was."""
VARIANTS = ("clean", "distractor", "background")
"""Counterfactual variants of a scene (:func:`_build_scene`): ``clean`` = the key person alone before a still
background (no distractor, crowd, occluder or camera shake); ``distractor`` = ``clean`` plus one unannotated person
walking through the key person's crop; ``background`` = ``clean`` with a panning background and a moving texture."""


class _Streams:
    """The random generators of one scene. Version 1 (the sets the shipped demo models were scored on) used ONE
    generator for everything, in the order :func:`_build_scene` draws; here every stream is then that generator, so
    version 1 renders byte-identical frames. Later versions give each entity its own stream (:data:`STREAMS`)."""

    def __init__(self, seed: int, sequence_index: int, version: int):
        self.version = version
        self._key = [seed, sequence_index, version]
        self._shared = np.random.default_rng(self._key) if version == 1 else None

    def __call__(self, name: str, index: int = 0) -> np.random.Generator:
        """A new generator for stream ``name`` (call once per entity)."""
        if self._shared is not None:
            return self._shared
        return np.random.default_rng([*self._key, STREAMS[name], index])


def _time_grid(frames: int) -> np.ndarray:
    return np.arange(-2.0, frames + 2.0, 0.125)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _height_px(scene: _Scene, person: _Person, ground_y: float) -> float:
    return max(scene.persp * (ground_y - scene.horizon), 4.0) * person.size


_GAITS = {
    # thigh swing, knee flex, arm swing, elbow base flex, elbow swing (radians)
    "walk": (0.42, 0.6, 0.38, 0.25, 0.35),
    "run": (0.75, 1.3, 0.80, 1.30, 0.25),
    "stand": (0.03, 0.05, 0.05, 0.15, 0.05),
    "spin": (0.10, 0.20, 0.08, 0.20, 0.08),
    "wave": (0.03, 0.05, 0.05, 0.20, 0.05),
}
_SPEED = {"walk": (0.022, 0.034), "run": (0.07, 0.10), "stand": (0.0, 0.0), "spin": (0.0, 0.0), "wave": (0.0, 0.0)}
# Gait frequency in radians per frame (a walking cycle of ~1.1 s at 25 fps; running ~0.7 s).
_CADENCE = {"walk": 2 * math.pi / 28, "run": 2 * math.pi / 17, "stand": 2 * math.pi / 70, "spin": 2 * math.pi / 40,
            "wave": 2 * math.pi / 70}


def _make_person(rng: np.random.Generator, scene: _Scene, entity_id: int, track_id: int, action: str,
                 ground_y: float, x_mid: float, hue: float, is_crowd: bool = False) -> _Person:
    frames = scene.frames
    grid = _time_grid(frames)
    size = float(rng.uniform(0.88, 1.1))
    colours = {
        "shirt": _bgr(hue, rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95)),
        "trousers": _bgr(*_TROUSER_COLOURS[rng.integers(len(_TROUSER_COLOURS))]) * rng.uniform(0.85, 1.15),
        "skin": _bgr(*_SKIN_TONES[rng.integers(len(_SKIN_TONES))]),
        "hair": _bgr(*_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]),
        "shoes": _bgr(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.08, 0.35)),
    }
    if rng.uniform() < 0.25:  # some wear a second hue on the trousers
        colours["trousers"] = _bgr(hue + 0.5, rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6))
    colours = {k: tuple(float(min(v, 255.0)) for v in c) for k, c in colours.items()}
    gait = _GAITS[action]
    wave_side = int(rng.choice([-1, 1])) if action == "wave" else 0
    wave_period = float(rng.uniform(10.0, 16.0))
    lean = float(rng.uniform(0.12, 0.22)) if action == "run" else float(rng.uniform(-0.03, 0.05))

    # Heading and velocity, integrated on the fine grid (Euler steps of 1/8 frame).
    g = len(grid)
    heading = np.zeros(g)
    if action in ("walk", "run"):
        start = float(rng.choice([-1.0, 1.0])) * math.pi / 2 + rng.normal(0.0, 0.3)
        heading[:] = start
        if action == "walk" and rng.uniform() < 0.4:
            # A turn: the heading sweeps pi through the front or the back view and the walker comes back.
            t_turn = rng.uniform(0.2, 0.7) * frames
            duration = rng.uniform(8.0, 16.0)
            sweep = float(rng.choice([-1.0, 1.0])) * math.pi
            heading = start + sweep * _smoothstep((grid - t_turn) / duration)
    elif action == "spin":
        heading = rng.uniform(-math.pi, math.pi) + float(rng.choice([-1.0, 1.0])) * rng.uniform(0.06, 0.12) * grid
    else:
        heading[:] = rng.uniform(-0.6, 0.6)
    speed_factor = rng.uniform(*_SPEED[action])
    x = np.zeros(g)
    gy = np.zeros(g)
    gy[0] = ground_y
    dt = grid[1] - grid[0]
    h0 = scene.persp * (ground_y - scene.horizon) * size
    for i in range(1, g):
        h = max(scene.persp * (gy[i - 1] - scene.horizon) * size, 4.0)
        v = speed_factor * h
        x[i] = x[i - 1] + v * math.sin(heading[i - 1]) * dt
        # Walking toward the camera moves the feet down the frame (foreshortened).
        gy[i] = gy[i - 1] + 0.3 * v * math.cos(heading[i - 1]) * dt * (h / max(h0, 1.0))
    x += x_mid - np.interp(frames / 2.0, grid, x)
    cadence = _CADENCE[action] * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0.0, 2 * math.pi) + cadence * grid
    return _Person(entity_id=entity_id, track_id=track_id, is_crowd=is_crowd, action=action, size=size,
                   width=float(rng.uniform(0.88, 1.15)), gait=gait, lean=lean, wave_side=wave_side,
                   wave_period=wave_period, colours=colours, short_sleeves=bool(rng.uniform() < 0.4),
                   shorts=bool(rng.uniform() < 0.2), grid=grid, heading=heading, root_x=x, ground_y=gy, phase=phase)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise in [0, 1], float32 ``[h, w]``: random lattices upsampled bicubically, halving each octave."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    amplitude = 1.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        lattice = rng.random((gh, gw)).astype(np.float32)
        out += amplitude * cv2.resize(lattice, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= 0.5
        cell = max(cell / 2.0, 2.0)
    return np.clip(out / total, 0.0, 1.0)


def _background(rng: np.random.Generator, w: int, h: int, horizon: int) -> np.ndarray:
    """Textured background ``[h, w, 3]`` uint8: an upper (sky/wall) and a lower (ground) region plus props."""
    img = np.zeros((h, w, 3), np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    upper_style = rng.choice(["sky", "stripes", "bricks", "noise"])
    lower_style = rng.choice(["tiles", "grass", "asphalt", "stripes"])
    c1, c2 = _bgr(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95)), \
        _bgr(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.8))
    top = img[:horizon]
    if upper_style == "sky":
        sky_a, sky_b = _bgr(0.58, rng.uniform(0.3, 0.6), 0.95), _bgr(0.55, rng.uniform(0.05, 0.25), 0.98)
        u = rows[:horizon] / max(horizon, 1)
        top[:] = sky_a * (1 - u) + sky_b * u
        clouds = _value_noise(rng, horizon, w, 40.0, 4)[..., None]
        top[:] = top * (1 - 0.5 * np.clip(clouds * 2 - 1, 0, 1)) + 250 * 0.5 * np.clip(clouds * 2 - 1, 0, 1)
    elif upper_style == "stripes":
        xs = 0
        while xs < w:
            sw = int(rng.integers(6, 40))
            top[:, xs:xs + sw] = _bgr(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.35, 0.95))
            xs += sw
    elif upper_style == "bricks":
        bh, bw = int(rng.integers(8, 16)), int(rng.integers(20, 40))
        top[:] = c1 * 0.55
        for r, y0 in enumerate(range(0, horizon, bh)):
            offset = (bw // 2) * (r % 2)
            for x0 in range(-offset, w, bw):
                shade = rng.uniform(0.8, 1.1)
                top[y0 + 1:y0 + bh - 1, max(x0 + 1, 0):max(x0 + bw - 1, 0)] = c1 * shade
    else:
        n = _value_noise(rng, horizon, w, rng.uniform(10, 60), 4)[..., None]
        top[:] = c1 * (1 - n) + c2 * n
    if upper_style != "sky":  # windows, doors or posters on the wall
        for _ in range(int(rng.integers(1, 5))):
            ww, wh = int(rng.integers(20, 70)), int(rng.integers(20, max(21, horizon // 2)))
            x0, y0 = int(rng.integers(0, max(1, w - ww))), int(rng.integers(0, max(1, horizon - wh)))
            colour = _bgr(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.1, 0.9))
            cv2.rectangle(top, (x0, y0), (x0 + ww, y0 + wh), (colour * 0.6).tolist(), -1)
            cv2.rectangle(top, (x0 + 3, y0 + 3), (x0 + ww - 3, y0 + wh - 3), colour.tolist(), -1)
    else:  # trees on the horizon
        for _ in range(int(rng.integers(1, 6))):
            tx, r = int(rng.integers(0, w)), int(rng.integers(12, 40))
            trunk = _bgr(0.08, 0.6, rng.uniform(0.2, 0.4))
            cv2.rectangle(top, (tx - r // 6, horizon - r), (tx + r // 6, horizon), trunk.tolist(), -1)
            leaf = _bgr(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
            cv2.circle(top, (tx, horizon - r - r // 2), r, leaf.tolist(), -1, cv2.LINE_AA)

    ground = img[horizon:]
    gh = h - horizon
    base = _bgr(rng.uniform(), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.75))
    if lower_style == "grass":
        base = _bgr(rng.uniform(0.2, 0.33), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
    n = _value_noise(rng, gh, w, rng.uniform(4, 20), 3)[..., None]
    ground[:] = base * (0.75 + 0.5 * n)
    if lower_style == "tiles":
        # Perspective tiles: rows get taller toward the camera, columns converge at a vanishing point.
        line = (base * 0.55).tolist()
        y, step = 0.0, 3.0
        while y < gh:
            cv2.line(ground, (0, int(y)), (w, int(y)), line, 1, cv2.LINE_AA)
            step *= 1.35
            y += step
        vx = rng.uniform(0.2, 0.8) * w
        for k in range(-12, 13):
            cv2.line(ground, (int(vx), 0), (int(vx + k * w / 5), gh), line, 1, cv2.LINE_AA)
    elif lower_style == "stripes":
        for y0 in range(0, gh, int(rng.integers(10, 30))):
            ground[y0:y0 + int(rng.integers(2, 8))] *= 0.8
    # Lamp posts and bollards: static limb-like distractors.
    for _ in range(int(rng.integers(0, 3))):
        px, top_y = int(rng.integers(0, w)), int(rng.integers(0, max(1, horizon - 10)))
        bottom = int(horizon + rng.uniform(0.05, 0.4) * gh)
        colour = _bgr(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.15, 0.5))
        cv2.line(img, (px, top_y), (px, bottom), colour.tolist(), int(rng.integers(2, 6)), cv2.LINE_AA)
    # Uneven lighting over the frame.
    light = _value_noise(rng, h, w, max(w, h) / 2.0, 2)[..., None]
    img *= 0.8 + 0.4 * light
    return np.clip(img, 0, 255).astype(np.uint8)


def _occluder_patch(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    colour = _bgr(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.9))
    if kind == "pole":
        u = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        profile = 0.45 + 0.6 * np.sqrt(np.clip(1 - (u + 0.35) ** 2, 0, 1))  # cylinder lit from the left
        patch = np.ones((h, w, 3), np.float32) * profile[None, :, None] * colour
    else:
        v = np.linspace(0.0, 1.0, h, dtype=np.float32)
        patch = np.ones((h, w, 3), np.float32) * (1.05 - 0.35 * v)[:, None, None] * colour
        lid = max(2, h // 6)
        patch[:lid] = colour * 1.25  # the top face catches the light
        texture = _value_noise(rng, h, w, 6.0, 2)[..., None]
        patch *= 0.85 + 0.3 * texture
        patch[:, :2] *= 0.6
        patch[:, -2:] *= 0.6
        patch[-2:] *= 0.6
    return np.clip(patch, 0, 255).astype(np.float32)


def _build_scene(seed: int, sequence_index: int, frames: int, size: tuple[int, int], options: SynthOptions,
                 variant: Optional[str] = None) -> _Scene:
    """The scene of sequence ``sequence_index``. ``variant`` (version >= 2 only) renders one of the counterfactual
    :data:`VARIANTS` of it: one key person, and only the toggled element differs between variants."""
    if variant is not None and (variant not in VARIANTS or options.version < 2):
        raise ValueError(f"variant {variant!r}: choose one of {', '.join(VARIANTS)} (SynthTrack version >= 2)")
    streams = _Streams(seed, sequence_index, options.version)
    layout = streams("layout")
    width, height = size
    horizon = float(height * layout.uniform(0.28, 0.42))
    near_height = height * layout.uniform(0.55, 0.8)  # a person standing at the bottom edge
    persp = near_height / (height - horizon)
    m = _SHAKE_MARGIN
    background = _background(streams("background"), width + 2 * m, height + 2 * m, int(horizon) + m)
    noise_rng = streams("noise")
    noise = noise_rng.normal(0.0, noise_rng.uniform(1.5, 4.0), (height + 32, width + 32, 3)).astype(np.int16)
    grid = _time_grid(frames)
    scene = _Scene(width=width, height=height, frames=frames, horizon=horizon, persp=persp, background=background,
                   noise=noise, people=[], occluders=[], exposure=0.0, shake_grid=grid,
                   shake=np.zeros((len(grid), 2)), summary={}, max_substeps=options.max_substeps)

    has_blur = layout.uniform() < options.blur_probability
    has_occluder = layout.uniform() < options.occluder_probability
    has_shake = layout.uniform() < options.shake_probability
    has_distractor = layout.uniform() < options.distractor_probability
    has_crowd = layout.uniform() < options.crowd_probability

    n_people = int(layout.integers(options.people[0], options.people[1] + 1))
    if variant is not None:  # one key person, nothing else near it; the variant adds back one element
        n_people, has_occluder, has_shake, has_crowd = 1, False, False, False
        has_distractor = variant == "distractor"
    actions = list(layout.choice(["walk", "walk", "walk", "wave", "stand", "spin", "run"], size=n_people))
    if has_blur and "run" not in actions:
        actions[int(layout.integers(n_people))] = "run" if layout.uniform() < 0.7 else "wave"
    hue0 = layout.uniform()
    gy_near, gy_far = height + 0.15 * height, horizon + 0.45 * (height - horizon)
    people: list[_Person] = []
    for k, action in enumerate(actions):
        own = streams("person", k)
        gy = own.uniform(gy_far, gy_near)
        x_mid = own.uniform(0.12, 0.88) * width
        people.append(_make_person(own, scene, k + 1, k, action, gy, x_mid, hue0 + 0.618 * k))
    if has_distractor:
        rng = streams("distractor")
        anchor = people[int(rng.integers(len(people)))]
        gy = float(np.clip(anchor.ground_y[len(grid) // 2] + rng.uniform(-25, 25), gy_far, gy_near))
        h = persp * (gy - horizon)
        if variant == "distractor":
            # It walks through the key person's crop: level with it at mid-clip, then past it.
            x_mid = float(np.interp(frames / 2.0, anchor.grid, anchor.root_x))
            action = "walk"
        else:
            x_mid = (float(np.interp(frames / 2.0, anchor.grid, anchor.root_x))
                     + rng.choice([-1, 1]) * rng.uniform(0.1, 0.35) * h)
            action = str(rng.choice(["walk", "stand", "wave"]))
        k = len(people)
        distractor = _make_person(rng, scene, k + 1, k if variant is None else -1, action, gy, x_mid,
                                  hue0 + 0.618 * k)
        distractor.annotated = variant is None
        people.append(distractor)
    for person in people:
        if person.action == "wave" and has_blur:
            # a fast wave blurs the forearm (version 1 drew this from its one stream, after the distractor)
            rng = layout if options.version == 1 else streams("person", 100 + person.entity_id)
            person.wave_period = float(rng.uniform(5.0, 7.0))

    camera = streams("camera")
    if has_blur:
        scene.exposure = float(camera.uniform(0.35, 0.7))  # shutter 1/70 to 1/35 s at 25 fps
    elif has_shake:
        scene.exposure = float(camera.uniform(0.15, 0.35))  # only the jerks blur
    if has_shake:
        amplitude = camera.uniform(1.5, 5.0)
        shake = np.zeros((len(grid), 2))
        for axis in range(2):
            for _ in range(3):
                freq, ph = camera.uniform(0.2, 1.2), camera.uniform(0, 2 * math.pi)
                shake[:, axis] += amplitude / 2 * np.sin(freq * grid + ph)
        for _ in range(max(1, frames // 10)):  # jerks: a fast step of several pixels and back
            t0 = camera.uniform(0, frames)
            step = camera.uniform(-1, 1, size=2) * camera.uniform(5, 10)
            bump = np.exp(-0.5 * ((grid - t0) / 0.8) ** 2)
            shake += bump[:, None] * step[None, :]
        scene.shake = np.clip(shake, -m, m)

    next_id = len(people) + 1
    if has_occluder:
        rng = streams("occluder")
        for _ in range(int(rng.integers(1, 3))):
            target = people[int(rng.integers(len(people)))]
            t_at = rng.uniform(0.25, 0.75) * frames
            gy = float(np.interp(t_at, target.grid, target.ground_y)) + rng.uniform(4, 30)
            h = persp * (gy - horizon)
            kind = "pole" if rng.uniform() < 0.5 else "box"
            if kind == "pole":
                ow, oh = int(max(6, rng.uniform(0.05, 0.12) * h)), int(gy + m + 10)
            else:
                ow, oh = int(max(10, rng.uniform(0.3, 0.7) * h)), int(max(8, rng.uniform(0.3, 0.65) * h))
            vx = 0.0 if rng.uniform() < 0.3 else float(rng.choice([-1, 1]) * rng.uniform(1.0, 5.0))
            x_at = float(np.interp(t_at, target.grid, target.root_x)) - ow / 2 + rng.uniform(-0.1, 0.1) * h
            scene.occluders.append(_Occluder(next_id, kind, _occluder_patch(rng, kind, ow, oh), x_at, t_at, vx, gy))
            next_id += 1
    crowd: list[_Person] = []
    if has_crowd:
        rng = streams("crowd")
        centre = rng.uniform(0.2, 0.8) * width
        spread = rng.uniform(0.08, 0.18) * width
        for _ in range(int(rng.integers(6, 13))):
            gy = horizon + rng.uniform(0.10, 0.22) * (height - horizon)
            action = str(rng.choice(["stand", "stand", "walk", "spin"]))
            person = _make_person(rng, scene, next_id, -1, action, gy, centre + rng.uniform(-1, 1) * spread,
                                  rng.uniform(), is_crowd=True)
            if action == "walk":  # crowd members mill about instead of leaving
                person.root_x = centre + (person.root_x - centre) * 0.3
            crowd.append(person)
            next_id += 1
    if variant == "background":
        rng = streams("background_motion")
        scene.background_motion = _BackgroundMotion(
            pan_px_per_frame=float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)),
            texture=_value_noise(rng, height + 2 * m, width + 2 * m, rng.uniform(8, 20), 3),
            texture_velocity=(float(rng.uniform(-2.0, 2.0)), float(rng.uniform(0.5, 1.5))),
            strength=float(rng.uniform(0.3, 0.5)))
    scene.people = people + crowd
    scene.summary = {
        "version": options.version,
        "seed": seed,
        "sequence_index": sequence_index,
        "people": [{"track_id": p.track_id, "action": p.action} for p in people if p.annotated],
        "occluders": [o.kind for o in scene.occluders],
        "crowd": len(crowd),
        "exposure": round(scene.exposure, 3),
        "shake_px": round(float(np.abs(scene.shake).max()), 2),
    }
    if variant is not None:
        scene.summary["variant"] = variant
        scene.summary["distractors"] = sum(1 for p in people if not p.annotated)
    return scene


