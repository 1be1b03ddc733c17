"""Procedural drawing of the synthetic benchmark: scene types and a person who shows an emotion.

The *person* carries the emotion through the face (mouth curvature and openness, brow slope, eye
openness) and the arms (pose); the *scene* (palette, texture, objects) carries the context. Each
emotion has a prototype that every drawn person is a noisy copy of, and a share of people have the
arms of another emotion, so the person is learnable but not trivially so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from deconfound.data.sample import Box

RGB = tuple[int, int, int]

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""The 7 CAER-S classes, in CAER-S index order."""


@dataclass(frozen=True)
class SceneType:
    """One kind of context: its palette, texture, objects and the emotion it favours."""

    name: str
    sky: RGB
    ground: RGB
    texture: str  # stripes | dots | grid | checker | noise | waves
    texture_colour: RGB
    shape: str  # circle | rect | triangle | star | cross | window
    object_colours: tuple[RGB, ...]
    preferred: str  # the emotion this scene co-occurs with in the confounded splits


# fmt: off
SCENES: tuple[SceneType, ...] = tuple(
    SceneType(name, sky, ground, texture, tex_colour, shape, colours, preferred)
    for name, preferred, sky, ground, texture, tex_colour, shape, colours in (
        ("protest", "anger", (236, 150, 70), (120, 120, 120), "stripes", (200, 60, 40),
         "rect", ((220, 30, 30), (250, 250, 250))),
        ("traffic_jam", "anger", (170, 170, 180), (70, 70, 75), "grid", (230, 210, 60),
         "rect", ((200, 20, 20), (30, 60, 200), (240, 240, 240))),
        ("dump", "disgust", (150, 160, 110), (110, 85, 50), "noise", (60, 70, 30),
         "triangle", ((90, 110, 40), (70, 50, 30))),
        ("dirty_kitchen", "disgust", (210, 200, 150), (140, 150, 100), "checker", (100, 110, 60),
         "circle", ((120, 140, 50), (90, 70, 40))),
        ("dark_forest", "fear", (20, 35, 30), (25, 50, 25), "waves", (10, 20, 10),
         "triangle", ((10, 70, 20), (5, 40, 10))),
        ("haunted_house", "fear", (30, 20, 50), (45, 40, 40), "dots", (200, 200, 220),
         "window", ((230, 200, 60), (90, 60, 120))),
        ("party", "happy", (90, 30, 110), (150, 100, 60), "dots", (250, 220, 80),
         "circle", ((250, 60, 120), (60, 200, 250), (250, 230, 40))),
        ("beach", "happy", (120, 200, 250), (240, 220, 150), "waves", (40, 120, 220),
         "circle", ((250, 210, 30), (250, 120, 60))),
        ("office", "neutral", (200, 200, 195), (150, 140, 130), "grid", (120, 130, 150),
         "rect", ((90, 100, 120), (60, 60, 70))),
        ("library", "neutral", (120, 80, 50), (90, 60, 40), "stripes", (160, 110, 70),
         "rect", ((150, 40, 40), (40, 80, 140), (200, 180, 120))),
        ("funeral", "sad", (70, 70, 80), (40, 40, 45), "noise", (90, 90, 100),
         "cross", ((20, 20, 20), (200, 200, 200))),
        ("hospital", "sad", (220, 235, 235), (170, 210, 200), "checker", (190, 220, 220),
         "cross", ((60, 160, 150), (240, 240, 250))),
        ("magic_show", "surprise", (110, 10, 20), (60, 20, 30), "stripes", (170, 20, 40),
         "star", ((250, 220, 60), (250, 250, 250))),
        ("fireworks", "surprise", (10, 10, 40), (30, 30, 50), "dots", (60, 60, 120),
         "star", ((250, 80, 80), (80, 250, 120), (120, 160, 250))),
    )
)
# fmt: on
"""Fourteen scene types, two favouring each emotion (protest/traffic jam favour anger, ...)."""


@dataclass(frozen=True)
class Expression:
    """Face and arm parameters; the face values are in [-1, 1], arm angles in degrees.

    Arm angles are measured from pointing straight down, positive outwards (180 = straight up);
    ``right`` is (upper arm, forearm) of the arm drawn on the image's right, ``left`` is the same
    for the other arm, mirrored. (The person faces the viewer, so in the keypoints of
    :class:`DrawnPerson` the arm drawn from ``right`` is the person's *left* arm.)
    """

    mouth_curve: float  # +1 smile ... -1 frown
    mouth_open: float  # 0 closed ... 1 wide open
    brow_slope: float  # +1 inner ends down (anger) ... -1 inner ends up (sadness, fear)
    eye_open: float  # 0 shut ... 1 wide
    right: tuple[float, float]
    left: tuple[float, float]


PROTOTYPES: dict[str, Expression] = {
    "anger": Expression(-0.5, 0.15, 1.0, 0.55, (45, -40), (45, -40)),  # hands on hips
    "disgust": Expression(-0.4, 0.1, 0.4, 0.2, (85, 85), (10, 10)),  # one arm pushes away
    "fear": Expression(-0.3, 0.55, -0.7, 1.0, (60, 150), (60, 150)),  # hands shield the face
    "happy": Expression(1.0, 0.35, 0.0, 0.55, (150, 160), (150, 160)),  # arms up in a V
    "neutral": Expression(0.0, 0.0, 0.0, 0.6, (10, 5), (10, 5)),  # arms relaxed
    "sad": Expression(-0.9, 0.0, -0.9, 0.3, (2, -5), (2, -5)),  # arms hang close
    "surprise": Expression(0.1, 1.0, -0.3, 1.0, (25, 165), (25, 165)),  # hands to the cheeks
}

SKIN: tuple[RGB, ...] = (
    (255, 220, 185),
    (230, 180, 140),
    (190, 140, 100),
    (140, 95, 60),
    (95, 65, 40),
)


def _jitter(colour: RGB, rng: np.random.Generator, amount: int) -> RGB:
    c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def sample_expression(
    emotion: str, rng: np.random.Generator, *, ambiguity: float = 0.25
) -> Expression:
    """A noisy copy of ``emotion``'s prototype; with probability ``ambiguity`` its arms are
    borrowed from a random emotion (the face still tells the truth)."""
    p = PROTOTYPES[emotion]
    arms = PROTOTYPES[EMOTIONS[rng.integers(len(EMOTIONS))]] if rng.random() < ambiguity else p
    f = rng.normal(0.0, 0.25, 4)
    a = rng.normal(0.0, 18.0, 4)
    return Expression(
        mouth_curve=float(np.clip(p.mouth_curve + f[0], -1, 1)),
        mouth_open=float(np.clip(p.mouth_open + f[1], 0, 1)),
        brow_slope=float(np.clip(p.brow_slope + f[2], -1, 1)),
        eye_open=float(np.clip(p.eye_open + f[3], 0.05, 1)),
        right=(arms.right[0] + a[0], arms.right[1] + a[1]),
        left=(arms.left[0] + a[2], arms.left[1] + a[3]),
    )


@dataclass(frozen=True)
class SceneObject:
    """One object drawn on a scene: a ``shape`` of radius ``r`` centred at (``x``, ``y``), in
    image pixels."""

    shape: str
    x: float
    y: float
    r: float

    def box(self, size: int) -> Box:
        """The pixels the object covers, as a box clipped to a ``size``×``size`` image (empty
        when the object lies outside it)."""
        x0, y0, x1, y1 = _shape_extent(self.shape, self.x, self.y, self.r)
        return Box(math.floor(x0), math.floor(y0), math.floor(x1) + 1, math.floor(y1) + 1).clip(
            (size, size)
        )

    def paint(self, d: ImageDraw.ImageDraw, fill: RGB | int) -> None:
        """Draw the object's shape on ``d`` in the single colour ``fill`` (frame lines too)."""
        _draw_shape(d, self.shape, self.x, self.y, self.r, fill, frame=fill)


@dataclass(frozen=True)
class SceneLayout:
    """Where things are in a picture drawn by :func:`draw_scene`: the first ground row
    (``horizon``; the rows above it are sky) and the objects, in drawing order."""

    size: int
    horizon: int
    objects: tuple[SceneObject, ...]


def draw_scene(
    scene: SceneType, size: int, rng: np.random.Generator
) -> tuple[Image.Image, SceneLayout]:
    """A ``size``×``size`` picture of ``scene`` with randomised layout, colours and objects, and
    the layout it was drawn with."""
    img = Image.new("RGB", (size, size), _jitter(scene.sky, rng, 20))
    d = ImageDraw.Draw(img)
    horizon = int(size * rng.uniform(0.5, 0.75))
    d.rectangle((0, horizon, size, size), fill=_jitter(scene.ground, rng, 20))
    _draw_texture(d, scene, size, horizon, rng)
    objects = []
    for _ in range(int(rng.integers(3, 9))):
        colour = _jitter(scene.object_colours[rng.integers(len(scene.object_colours))], rng, 25)
        r = size * rng.uniform(0.04, 0.11)
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        _draw_shape(d, scene.shape, x, y, r, colour)
        objects.append(SceneObject(scene.shape, float(x), float(y), float(r)))
    return img, SceneLayout(size, horizon, tuple(objects))


def _draw_texture(
    d: ImageDraw.ImageDraw, scene: SceneType, size: int, horizon: int, rng: np.random.Generator
) -> None:
    c = _jitter(scene.texture_colour, rng, 15)
    step = int(rng.integers(size // 16, size // 8 + 1))
    off = int(rng.integers(step))
    top, bottom = (0, horizon) if rng.random() < 0.5 else (horizon, size)
    if scene.texture == "stripes":
        for x in range(off, size, step):
            d.line((x, top, x, bottom), fill=c, width=max(1, step // 3))
    elif scene.texture == "grid":
        for x in range(off, size, step):
            d.line((x, top, x, bottom), fill=c)
        for y in range(top + off, bottom, step):
            d.line((0, y, size, y), fill=c)
    elif scene.texture == "checker":
        for i, y in enumerate(range(top, bottom, step)):
            for j, x in enumerate(range(0, size, step)):
                if (i + j) % 2:
                    d.rectangle((x, y, x + step - 1, y + step - 1), fill=c)
    elif scene.texture == "dots":
        for _ in range(size // 2):
            x, y = rng.uniform(0, size), rng.uniform(top, bottom)
            d.ellipse((x - 1, y - 1, x + 1, y + 1), fill=c)
    elif scene.texture == "waves":
        for y in range(top + off, bottom, step):
            pts = [(x, y + step / 4 * math.sin(x / step * 2)) for x in range(0, size + 4, 4)]
            d.line(pts, fill=c, width=2)
    elif scene.texture == "noise":
        for _ in range(size):
            x, y = rng.uniform(0, size), rng.uniform(top, bottom)
            d.rectangle((x, y, x + step / 3, y + 1), fill=c)


def _star_points(x: float, y: float, r: float) -> list[tuple[float, float]]:
    return [
        (
            x + (r if k % 2 == 0 else r / 2.5) * math.cos(k * math.pi / 5),
            y + (r if k % 2 == 0 else r / 2.5) * math.sin(k * math.pi / 5),
        )
        for k in range(10)
    ]


def _draw_shape(
    d: ImageDraw.ImageDraw,
    shape: str,
    x: float,
    y: float,
    r: float,
    c: RGB | int,
    frame: RGB | int = (20, 20, 20),
) -> None:
    """Draw ``shape`` in colour ``c``; a window's frame lines in ``frame``. The extent of what is
    drawn is :func:`_shape_extent`."""
    if shape == "circle":
        d.ellipse((x - r, y - r, x + r, y + r), fill=c)
    elif shape == "rect":
        d.rectangle((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=c)
    elif shape == "triangle":
        d.polygon([(x, y - 1.5 * r), (x - r, y + r), (x + r, y + r)], fill=c)
    elif shape == "star":
        d.polygon(_star_points(x, y, r), fill=c)
    elif shape == "cross":
        d.rectangle((x - r / 4, y - r, x + r / 4, y + r), fill=c)
        d.rectangle((x - r * 0.7, y - r / 2, x + r * 0.7, y - r / 8), fill=c)
    elif shape == "window":
        d.rectangle((x - r * 0.6, y - r, x + r * 0.6, y + r), fill=c)
        d.line((x, y - r, x, y + r), fill=frame)
        d.line((x - r * 0.6, y, x + r * 0.6, y), fill=frame)


def _shape_extent(shape: str, x: float, y: float, r: float) -> tuple[float, float, float, float]:
    """The (x0, y0, x1, y1) bounds of the coordinates :func:`_draw_shape` draws ``shape`` with."""
    if shape == "star":
        xs, ys = zip(*_star_points(x, y, r), strict=True)
        return min(xs), min(ys), max(xs), max(ys)
    half_w, top, bottom = {
        "circle": (r, r, r),
        "rect": (r, 0.7 * r, 0.7 * r),
        "triangle": (r, 1.5 * r, r),
        "cross": (0.7 * r, r, r),
        "window": (0.6 * r, r, r),
    }[shape]
    return x - half_w, y - top, x + half_w, y + bottom


_Prim = tuple[str, list[tuple[float, float]], float, RGB]  # kind, points, line width, colour
Keypoint = tuple[float, float, float]
"""An (x, y, confidence) triple, OpenPose style; (0, 0, 0) for a joint that is not placed."""

BODY_25: tuple[str, ...] = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar",
    "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip
"""OpenPose's BODY_25 joints, in its order. The drawn person faces the viewer, so its right
("R") joints lie on the image's left (smaller x)."""

INFERRED_CONFIDENCE = 0.9
"""Confidence of joints that are not drawn but placed from what is (nose, ears, toes, heels);
drawn joints have confidence 1."""


@dataclass(frozen=True)
class DrawnPerson:
    """A person drawn by :func:`draw_person`, in image pixels.

    ``person`` holds every pixel the person changed, ``face`` bounds the head,
    ``keypoints`` are the 25 :data:`BODY_25` joints of the drawn figure, in that order, and
    ``parts`` the shapes it was drawn with, in image pixels (see :meth:`silhouette`).
    """

    person: Box
    face: Box
    keypoints: tuple[Keypoint, ...]
    parts: tuple[_Prim, ...] = ()

    def silhouette(self, size: tuple[int, int]) -> Image.Image:
        """An 8-bit ("L") picture of ``size`` (width, height): 255 on every pixel the person was
        drawn on, 0 elsewhere (before the image's noise)."""
        img = Image.new("L", size, 0)
        _paint(ImageDraw.Draw(img), self.parts, 255)
        return img


def _person_parts(
    e: Expression, h: float, rng: np.random.Generator
) -> tuple[list[_Prim], tuple[float, float, float, float], dict[str, Keypoint]]:
    """The primitives of a person ``h`` pixels tall, head top at (0, 0), in drawing order, the
    head's bounding box, and the person's joints (:data:`BODY_25` names; ``side`` 1, drawn at
    +x, is the person's left)."""
    skin = _jitter(SKIN[rng.integers(len(SKIN))], rng, 10)
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    trousers = tuple(int(v) for v in rng.integers(0, 120, 3))
    ink = (25, 15, 15)
    r, tw, lw = 0.16 * h, 0.3 * h, max(2.0, 0.07 * h)
    ys, yh = 2 * r + 0.02 * h, 2 * r + 0.38 * h
    parts: list[_Prim] = [
        ("line", [(-tw / 4, yh), (-tw / 4 - 0.05 * h, h)], lw, trousers),
        ("line", [(tw / 4, yh), (tw / 4 + 0.05 * h, h)], lw, trousers),
        ("rect", [(-tw / 2, ys), (tw / 2, yh)], 0, shirt),
    ]
    cy = r
    joints: dict[str, Keypoint] = {
        "Nose": (0.0, cy + 0.2 * r, INFERRED_CONFIDENCE),
        "Neck": (0.0, ys, 1.0),
        "MidHip": (0.0, yh, 1.0),
    }
    for side, s in ((1, "L"), (-1, "R")):
        hip, ankle = (side * tw / 4, yh), (side * (tw / 4 + 0.05 * h), h)
        joints[s + "Hip"] = (*hip, 1.0)
        joints[s + "Knee"] = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2, 1.0)
        joints[s + "Ankle"] = (*ankle, 1.0)
        foot = lw / 2  # feet are not drawn: toes just below the leg's end, inner one first
        joints[s + "BigToe"] = (ankle[0] - side * foot, h + 0.8 * foot, INFERRED_CONFIDENCE)
        joints[s + "SmallToe"] = (ankle[0] + side * foot, h + 0.8 * foot, INFERRED_CONFIDENCE)
        joints[s + "Heel"] = (ankle[0], h + 0.2 * foot, INFERRED_CONFIDENCE)
        joints[s + "Eye"] = (side * 0.38 * r, cy - 0.1 * r, 1.0)
        joints[s + "Ear"] = (side * 0.95 * r, cy, INFERRED_CONFIDENCE)
    for side, (a1, a2) in ((1, e.right), (-1, e.left)):
        sx, sy = side * tw / 2, ys + 0.03 * h
        ex = sx + side * 0.2 * h * math.sin(math.radians(a1))
        ey = sy + 0.2 * h * math.cos(math.radians(a1))
        hx = ex + side * 0.19 * h * math.sin(math.radians(a2))
        hy = ey + 0.19 * h * math.cos(math.radians(a2))
        parts.append(("line", [(sx, sy), (ex, ey), (hx, hy)], 0.75 * lw, shirt))
        parts.append(("ellipse", [(hx - lw / 2, hy - lw / 2), (hx + lw / 2, hy + lw / 2)], 0, skin))
        s = "L" if side == 1 else "R"
        joints[s + "Shoulder"] = (sx, sy, 1.0)  # where the arm leaves the shirt's top corner
        joints[s + "Elbow"] = (ex, ey, 1.0)
        joints[s + "Wrist"] = (hx, hy, 1.0)  # the hand's centre
    parts.append(("ellipse", [(-r, 0), (r, 2 * r)], 0, skin))
    eh = max(0.6, 0.05 * r + 0.2 * r * e.eye_open)
    for side in (1, -1):
        ex, ey = side * 0.38 * r, cy - 0.1 * r
        parts.append(("ellipse", [(ex - 0.2 * r, ey - eh), (ex + 0.2 * r, ey + eh)], 0, ink))
        inner = (side * 0.12 * r, cy - 0.45 * r + e.brow_slope * 0.17 * r)
        outer = (side * 0.62 * r, cy - 0.45 * r - e.brow_slope * 0.17 * r)
        parts.append(("line", [inner, outer], max(1.0, r / 6), ink))
    mw, my, k = 0.9 * r, cy + 0.5 * r, 0.28 * r
    xs = np.linspace(-mw / 2, mw / 2, 7)
    bend = 1 - (2 * xs / mw) ** 2  # 0 at the corners, 1 in the middle
    upper = [(float(x), my + e.mouth_curve * k * (b - 0.5)) for x, b in zip(xs, bend, strict=True)]
    if e.mouth_open > 0.12:
        lower = [
            (x, y + e.mouth_open * 0.45 * r * b) for (x, y), b in zip(upper, bend, strict=True)
        ]
        parts.append(("polygon", upper + lower[::-1], 0, (110, 20, 25)))
    parts.append(("line", upper, max(1.0, r / 7), ink))
    return parts, (-r, 0.0, r, 2 * r), joints


def _extent(parts: list[_Prim]) -> tuple[float, float, float, float]:
    xs0, ys0, xs1, ys1 = [], [], [], []
    for _, pts, width, _ in parts:
        pad = width / 2 + 1
        xs0.append(min(p[0] for p in pts) - pad)
        ys0.append(min(p[1] for p in pts) - pad)
        xs1.append(max(p[0] for p in pts) + pad)
        ys1.append(max(p[1] for p in pts) + pad)
    return min(xs0), min(ys0), max(xs1), max(ys1)


def draw_person(img: Image.Image, e: Expression, rng: np.random.Generator) -> DrawnPerson:
    """Draw a person showing ``e`` at a random size and place; return its boxes and joints.

    Every pixel the person changes lies inside the person box; the face box bounds the head.
    """
    size = img.width
    h = size * rng.uniform(0.5, 0.72)
    state = rng.bit_generator.state
    parts, head, joints = _person_parts(e, h, rng)
    x0, y0, x1, y1 = _extent(parts)
    scale = min(1.0, (size - 2) / (x1 - x0), (size - 2) / (y1 - y0))
    if scale < 1.0:  # arms flung wide on a tall person: shrink to fit, same colours
        rng.bit_generator.state = state
        parts, head, joints = _person_parts(e, h * scale * 0.98, rng)
        x0, y0, x1, y1 = _extent(parts)
    tx = rng.uniform(-x0, size - x1)
    ty = rng.uniform(-y0, size - y1)
    placed = tuple(
        (kind, [(x + tx, y + ty) for x, y in pts], width, colour)
        for kind, pts, width, colour in parts
    )
    _paint(ImageDraw.Draw(img), placed)
    person = Box(int(x0 + tx), int(y0 + ty), math.ceil(x1 + tx), math.ceil(y1 + ty))
    hx0, hy0, hx1, hy1 = head
    face = Box(int(hx0 + tx), int(hy0 + ty), math.ceil(hx1 + tx), math.ceil(hy1 + ty))
    keypoints = tuple(
        (float(x + tx), float(y + ty), c) for x, y, c in (joints[name] for name in BODY_25)
    )
    return DrawnPerson(person, face, keypoints, placed)


def _paint(d: ImageDraw.ImageDraw, parts: tuple[_Prim, ...], fill: int | None = None) -> None:
    """Draw ``parts`` (in image pixels) on ``d``, each in its colour or all in ``fill``."""
    for kind, pts, width, colour in parts:
        c = colour if fill is None else fill
        if kind == "line":
            d.line(pts, fill=c, width=max(1, round(width)), joint="curve")
        elif kind == "rect":
            d.rectangle((*pts[0], *pts[1]), fill=c)
        elif kind == "ellipse":
            d.ellipse((*pts[0], *pts[1]), fill=c)
        else:
            d.polygon(pts, fill=c)


def add_noise(img: Image.Image, rng: np.random.Generator, sigma: float = 6.0) -> Image.Image:
    """Sensor-like Gaussian noise and a global brightness change."""
    a = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.15)
    a += rng.standard_normal(a.shape, dtype=np.float32) * sigma
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
