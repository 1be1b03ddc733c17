"""Procedural drawing of the synthetic facial-expression benchmark: cartoon faces, three capture
styles.

A face is drawn at four times the output size and downsampled (antialiased), so the cues stay
readable at 48 pixels. The *expression* carries the emotion through several parametric cues
(:class:`Expression`): brow height and slant, eye openness, mouth curvature, opening and width,
an asymmetric upper-lip raise with a wrinkled nose (disgust), pressed lips with a furrowed brow
and a raised chin (anger), raised cheeks with smile folds (happiness), forehead lines (raised
brows). Each emotion has a prototype; a drawn face is the neutral face moved towards it by a
random intensity, with noise on every cue and small jitter of position, size and roll.

The *style* (:data:`STYLES`) is the capture set-up of one source data set: background, framing,
blur, noise, colour and tone. It is applied to the whole picture and is picked up from image
statistics at once, while the expression survives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from deconfound.data.sample import BASIC_EMOTIONS

RGB = tuple[int, int, int]
Point = tuple[float, float]

OVERSAMPLE = 4
"""Faces are drawn at this multiple of the output size, then downsampled."""


@dataclass(frozen=True)
class Style:
    """The capture set-up of one source: what every one of its pictures shares.

    Attributes:
        name: the source's name (its folder name in the written set).
        background: the backdrop's base colour, as drawn (before the tone changes below).
        backdrop: ``"studio"`` (even, lit behind the head), ``"mottled"`` (a blotchy painted
            cloth) or ``"room"`` (a dim wall with a bright window).
        scale: the head's height as a share of the image height.
        offset: the head centre's shift from the image centre, as shares of the image side
            (x right, y down).
        blur: Gaussian blur radius in output pixels (0: none).
        noise: standard deviation of the Gaussian sensor noise, in grey levels.
        saturation: 1 keeps the drawn colours, 0 makes the picture grey.
        tint: per-channel (R, G, B) gain.
        contrast: gain around mid-grey (128).
        brightness: grey levels added after the contrast change.
        vignette: how much darker the corners are than the centre (0: not at all).
    """

    name: str
    background: RGB
    backdrop: str
    scale: float
    offset: tuple[float, float]
    blur: float
    noise: float
    saturation: float
    tint: tuple[float, float, float]
    contrast: float
    brightness: float
    vignette: float


STYLES: tuple[Style, ...] = (
    Style(
        name="Studio",
        background=(212, 218, 228),
        backdrop="studio",
        scale=0.74,
        offset=(0.0, 0.03),
        blur=0.0,
        noise=2.0,
        saturation=1.0,
        tint=(1.0, 1.0, 1.0),
        contrast=1.1,
        brightness=14.0,
        vignette=0.0,
    ),
    Style(
        name="Archive",
        background=(178, 165, 140),
        backdrop="mottled",
        scale=0.62,
        offset=(0.0, -0.04),
        blur=0.55,
        noise=5.0,
        saturation=0.12,
        tint=(1.06, 0.93, 0.72),
        contrast=0.9,
        brightness=2.0,
        vignette=0.15,
    ),
    Style(
        name="Webcam",
        background=(62, 72, 88),
        backdrop="room",
        scale=0.66,
        offset=(0.09, 0.07),
        blur=0.3,
        noise=9.0,
        saturation=0.8,
        tint=(0.78, 1.0, 1.12),
        contrast=0.95,
        brightness=-28.0,
        vignette=0.35,
    ),
)
"""The three source styles, in confounder order: a bright even studio with a large centred
face; a low-contrast sepia archive scan, blurred, with a smaller face set high; a dim,
blue-green, noisy webcam with the face off-centre to the right and low."""


@dataclass(frozen=True)
class Identity:
    """One person: what stays the same across their expressions.

    Lengths are in head units (the head's half-height is about 1), relative to the head centre
    (x right, y down).
    """

    face_w: float  # head half-width
    face_h: float  # head half-height
    skin: RGB
    hair: RGB
    hair_style: int  # 0 short, 1 long, 2 shaved
    hairline: float  # y of the hairline (negative: above the centre)
    eye_dx: float  # horizontal distance of each eye from the centre line
    eye_y: float
    eye_w: float  # eye half-width
    iris: RGB
    brow_w: float  # brow thickness
    nose_y: float  # y of the nose tip
    mouth_y: float
    mouth_w: float  # mouth half-width, neutral
    lips: RGB
    shirt: RGB


_HAIR: tuple[RGB, ...] = (
    (28, 24, 24),
    (62, 40, 28),
    (110, 72, 40),
    (196, 164, 96),
    (150, 150, 152),
    (132, 56, 30),
)
_IRIS: tuple[RGB, ...] = ((60, 40, 25), (40, 90, 140), (80, 110, 60), (95, 70, 40))
_LIGHT_SKIN = np.array([250, 218, 190], dtype=np.float64)
_DARK_SKIN = np.array([100, 66, 44], dtype=np.float64)


def _rgb(a: np.ndarray | tuple[float, ...]) -> RGB:
    r, g, b = (min(255, max(0, round(float(v)))) for v in a)
    return (r, g, b)


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person; draws the same number of values whatever they come out as."""
    u = rng.random(16).tolist()
    tone = u[0] ** 0.9
    skin = _LIGHT_SKIN + tone * (_DARK_SKIN - _LIGHT_SKIN) + rng.normal(0.0, 6.0, 3)
    hair = np.asarray(_HAIR[int(u[1] * len(_HAIR))], dtype=np.float64) + rng.normal(0.0, 8.0, 3)
    lips = skin * np.array([0.78, 0.52, 0.52])
    return Identity(
        face_w=0.72 + 0.16 * u[2],
        face_h=0.95 + 0.08 * u[3],
        skin=_rgb(skin),
        hair=_rgb(hair),
        hair_style=int(u[4] * 3),
        hairline=-0.62 - 0.12 * u[5],
        eye_dx=0.32 + 0.08 * u[6],
        eye_y=-0.10 - 0.07 * u[7],
        eye_w=0.16 + 0.04 * u[8],
        iris=_IRIS[int(u[9] * len(_IRIS))],
        brow_w=0.065 + 0.035 * u[10],
        nose_y=0.22 + 0.07 * u[11],
        mouth_y=0.50 + 0.06 * u[12],
        mouth_w=0.28 + 0.07 * u[13],
        lips=_rgb(lips),
        shirt=_rgb(40 + 190 * rng.random(3)),
    )


@dataclass(frozen=True)
class Expression:
    """The face's expression cues; every one is 0 on the neutral face except ``eye_open`` and
    ``width`` (1 = neutral).

    Attributes:
        brow_raise: +1 brows raised high, -1 lowered.
        brow_slant: +1 inner ends pulled down (anger), -1 inner ends pulled up (sadness, fear).
        eye_open: eye height relative to neutral (0.5 narrowed, 1.5 wide open).
        curve: mouth corners, +1 up (smile) ... -1 down (frown).
        open: how far the mouth opens, 0 closed ... 1 wide.
        width: mouth width relative to neutral.
        sneer: one side of the upper lip raised (disgust).
        teeth: how much of the upper teeth shows in an open mouth.
        cheek: raised cheeks: smile folds beside the mouth and bulges under the eyes.
        wrinkle: wrinkled nose bridge and flared nostrils (disgust).
        furrow: vertical lines between the brows (anger).
        chin: a raised chin: a crease under the lower lip.
    """

    brow_raise: float = 0.0
    brow_slant: float = 0.0
    eye_open: float = 1.0
    curve: float = 0.0
    open: float = 0.0
    width: float = 1.0
    sneer: float = 0.0
    teeth: float = 0.0
    cheek: float = 0.0
    wrinkle: float = 0.0
    furrow: float = 0.0
    chin: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.float64)


NEUTRAL = Expression()

# fmt: off
PROTOTYPES: tuple[Expression, ...] = (
    # Anger: brows lowered and drawn together, eyes narrowed, lips pressed, chin raised
    Expression(brow_raise=-0.8, brow_slant=0.95, eye_open=0.55, curve=-0.2, width=0.75,
               furrow=1.0, chin=0.8),
    # Disgust: brows lowered, eyes narrowed, upper lip raised on one side, nose wrinkled
    Expression(brow_raise=-0.4, brow_slant=0.35, eye_open=0.6, curve=-0.45, open=0.1,
               width=0.92, sneer=1.0, teeth=0.8, cheek=0.15, wrinkle=1.0, furrow=0.4),
    # Fear: brows raised with inner ends up, eyes wide, mouth open and stretched sideways
    Expression(brow_raise=0.7, brow_slant=-0.6, eye_open=1.5, curve=-0.35, open=0.5,
               width=1.28, teeth=0.6, furrow=0.3),
    # Happiness: a wide smile showing teeth, raised cheeks, eyes slightly narrowed
    Expression(brow_raise=0.05, eye_open=0.72, curve=1.0, open=0.42, width=1.2, teeth=1.0,
               cheek=1.0),
    # Sadness: inner brow ends up, lids drooping, corners of the mouth down, chin raised
    Expression(brow_raise=0.1, brow_slant=-1.0, eye_open=0.68, curve=-0.95, width=0.9,
               chin=0.6),
    # Surprise: brows high, eyes wide, jaw dropped into a round open mouth
    Expression(brow_raise=1.0, eye_open=1.55, open=1.0, width=0.6),
)
# fmt: on
"""The prototype expression of each basic emotion, in :data:`BASIC_EMOTIONS` order."""

assert len(PROTOTYPES) == len(BASIC_EMOTIONS)

_CUE_NOISE = np.array([0.1, 0.1, 0.07, 0.08, 0.05, 0.05, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08])
"""Standard deviation of the per-image noise on each :class:`Expression` cue."""


def sample_expression(emotion: int, intensity: float, noise: np.ndarray) -> Expression:
    """The neutral face moved ``intensity`` of the way to ``emotion``'s prototype, plus
    ``noise`` (standard normal draws, one per cue) scaled per cue."""
    neutral = NEUTRAL.as_array()
    a = neutral + intensity * (PROTOTYPES[emotion].as_array() - neutral) + _CUE_NOISE * noise
    names = [f.name for f in fields(Expression)]
    values = dict(zip(names, a.tolist(), strict=True))
    for name in ("open", "sneer", "teeth", "cheek", "wrinkle", "furrow", "chin"):
        values[name] = max(0.0, values[name])
    values["eye_open"] = max(0.25, values["eye_open"])
    values["width"] = max(0.45, values["width"])
    return Expression(**values)


_ROUND = np.linspace(0.0, 2 * math.pi, 40, endpoint=False)
_COS, _SIN = np.cos(_ROUND), np.sin(_ROUND)
_LID = [(math.cos(a), math.sin(a)) for a in np.linspace(0.0, math.pi, 9)]
_MOUTH_T = np.linspace(-1.0, 1.0, 25)


class _Canvas:
    """Draws in head units on an oversampled image: (0, 0) is the head centre, 1 unit is
    ``unit`` pixels, and the head is rolled by ``roll`` degrees (clockwise on screen). Every
    shape is drawn as a polygon or polyline, so the roll is exact and costs nothing."""

    def __init__(self, img: Image.Image, cx: float, cy: float, unit: float, roll: float) -> None:
        self.d = ImageDraw.Draw(img)
        self.cx, self.cy, self.unit = cx, cy, unit
        a = math.radians(roll)
        self.cos, self.sin = unit * math.cos(a), unit * math.sin(a)

    def xy(self, pts: list[Point] | np.ndarray) -> list[float]:
        """``pts`` in pixels, flattened as PIL takes them."""
        if isinstance(pts, np.ndarray):
            return self._xy_array(pts[:, 0], pts[:, 1])
        out: list[float] = []
        c, s, cx, cy = self.cos, self.sin, self.cx, self.cy
        for x, y in pts:
            out += (cx + c * x - s * y, cy + s * x + c * y)
        return out

    def _xy_array(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        out = np.empty(2 * len(x))
        out[0::2] = self.cx + self.cos * x - self.sin * y
        out[1::2] = self.cy + self.sin * x + self.cos * y
        return out.tolist()

    def w(self, width: float) -> int:
        """A line width of ``width`` units, in pixels (at least one output pixel wide)."""
        return max(OVERSAMPLE, round(width * self.unit))

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        self.d.polygon(self._xy_array(x + rx * _COS, y + ry * _SIN), fill=fill)

    def line(self, pts: list[Point], width: float, fill: RGB) -> None:
        self.d.line(self.xy(pts), fill=fill, width=self.w(width), joint="curve")

    def polygon(self, pts: list[Point] | np.ndarray, fill: RGB) -> None:
        self.d.polygon(self.xy(pts), fill=fill)


def _shade(c: RGB, k: float) -> RGB:
    return _rgb(tuple(v * k for v in c))


def _arc(x0: float, x1: float, y: float, sag: float, n: int = 9) -> list[Point]:
    """Points from (x0, y) to (x1, y) bowing by ``sag`` in the middle (positive: down)."""
    ts = [-1.0 + 2.0 * i / (n - 1) for i in range(n)]
    return [(x0 + (t + 1) / 2 * (x1 - x0), y + sag * (1 - t * t)) for t in ts]


def _draw_head(c: _Canvas, ident: Identity, e: Expression, gaze: Point, sneer_side: int) -> None:
    """The whole figure in head units: shoulders, hair, head, ears and the face's features."""
    skin, ink = ident.skin, (30, 22, 20)
    fw, fh = ident.face_w, ident.face_h
    # shoulders and neck
    c.ellipse(0.0, fh + 0.75, 1.55, 0.62, ident.shirt)
    c.polygon([(-0.28, 0.4), (0.28, 0.4), (0.28, fh + 0.3), (-0.28, fh + 0.3)], _shade(skin, 0.88))
    if ident.hair_style == 1:  # long hair falls behind the head to the jaw: a rounded box
        top, bottom = -fh - 0.06, 0.55 * fh
        rx, ry, my = fw + 0.14, (bottom - top) / 2, (bottom + top) / 2
        box = np.stack(
            [
                rx * np.sign(_COS) * np.abs(_COS) ** 0.4,
                my + ry * np.sign(_SIN) * np.abs(_SIN) ** 0.4,
            ],
            axis=1,
        )
        c.polygon(box, ident.hair)
    for side in (-1, 1):  # ears
        c.ellipse(side * fw * 0.98, -0.02, 0.12, 0.2, _shade(skin, 0.92))
    c.ellipse(0.0, 0.0, fw, fh, skin)
    c.polygon(_hair_outline(ident), ident.hair if ident.hair_style != 2 else _shade(skin, 0.8))
    _draw_forehead(c, ident, e)
    _draw_eyes(c, ident, e, gaze, ink)
    _draw_nose(c, ident, e)
    _draw_mouth(c, ident, e, sneer_side)


def _hair_outline(ident: Identity) -> list[Point]:
    """The hair on top of the head: from the temples over the crown, back along a hairline that
    dips lowest at the temples."""
    fw, fh = ident.face_w + 0.05, ident.face_h + 0.07
    temple = min(ident.hairline + 0.3, -0.2)
    a0 = math.asin(-temple / fh)
    outer = [(fw * math.cos(a), -fh * math.sin(a)) for a in np.linspace(a0, math.pi - a0, 21)]
    xs = np.linspace(-outer[0][0] + 0.04, outer[0][0] - 0.04, 15)
    inner = [(float(x), ident.hairline + 0.3 * (x / xs[-1]) ** 2) for x in xs]
    return outer + inner


def _draw_forehead(c: _Canvas, ident: Identity, e: Expression) -> None:
    crease = _shade(ident.skin, 0.72)
    brow_y = ident.eye_y - 0.21 - 0.14 * e.brow_raise
    raised = max(0.0, e.brow_raise)
    if raised > 0.35:  # horizontal forehead lines
        for k in range(2):
            y = brow_y - 0.1 - 0.08 * k
            if y > ident.hairline + 0.1:
                c.line(_arc(-0.25, 0.25, y, -0.03), 0.025 * raised, crease)
    if e.furrow > 0.3:  # vertical lines between the brows
        for side in (-1, 1):
            x = side * 0.06
            c.line([(x, brow_y - 0.02), (x * 0.8, brow_y + 0.09)], 0.03 * e.furrow, crease)
    brow = _shade(ident.hair, 0.6)
    for side in (-1, 1):
        inner_x, outer_x = side * 0.1, side * (ident.eye_dx + ident.eye_w * 1.15)
        inner_y = brow_y + 0.1 * e.brow_slant
        outer_y = brow_y - 0.05 * e.brow_slant
        mid = ((inner_x + outer_x) / 2, (inner_y + outer_y) / 2 - 0.035)
        c.line([(inner_x, inner_y), mid, (outer_x, outer_y)], ident.brow_w, brow)


def _draw_eyes(c: _Canvas, ident: Identity, e: Expression, gaze: Point, ink: RGB) -> None:
    ew = ident.eye_w
    eh = 0.5 * ew * e.eye_open
    for side in (-1, 1):
        ex, ey = side * ident.eye_dx, ident.eye_y
        c.ellipse(ex, ey, ew, eh, (242, 242, 236))
        ir = 0.5 * ew
        ix, iy = ex + gaze[0] * ew, ey + gaze[1] * eh
        c.ellipse(ix, iy, ir, min(ir, eh * 0.95), ident.iris)
        c.ellipse(ix, iy, 0.45 * ir, min(0.45 * ir, eh * 0.6), (15, 12, 12))
        upper = [(ex + ew * cos_a, ey - eh * sin_a) for cos_a, sin_a in _LID]
        c.line(upper, 0.045, ink)
        if e.cheek > 0.3:  # raised cheek pushes the lower lid up
            c.line(
                _arc(ex - ew * 0.9, ex + ew * 0.9, ey + eh + 0.07, -0.04),
                0.025 * min(1.0, e.cheek),
                _shade(ident.skin, 0.75),
            )


def _draw_nose(c: _Canvas, ident: Identity, e: Expression) -> None:
    shade = _shade(ident.skin, 0.7)
    ny = ident.nose_y - 0.03 * e.wrinkle
    flare = 0.1 + 0.035 * e.wrinkle
    c.line([(0.02, ident.eye_y + 0.06), (0.05, ny - 0.02)], 0.03, shade)
    c.line(_arc(-flare, flare, ny, 0.04, 7), 0.035, shade)
    for side in (-1, 1):
        c.ellipse(side * 0.055, ny - 0.005, 0.03, 0.018, _shade(ident.skin, 0.45))
    if e.wrinkle > 0.3:  # wrinkled bridge
        for k in range(3):
            y = ident.eye_y + 0.07 + 0.05 * k
            c.line(_arc(-0.08, 0.08, y, -0.015, 5), 0.022 * min(1.0, e.wrinkle), shade)


def _draw_mouth(c: _Canvas, ident: Identity, e: Expression, sneer_side: int) -> None:
    mw = ident.mouth_w * e.width
    my = ident.mouth_y
    t = _MOUTH_T
    dome = np.sqrt(np.clip(1 - t * t, 0.0, 1.0))
    base = my - 0.15 * e.curve * t * t + 0.04 * e.curve
    raise_ = 0.13 * e.sneer * np.clip(sneer_side * t + 0.25, 0.0, 1.0) * dome
    upper = base - 0.05 * e.open * dome - raise_
    lower = base + 0.26 * e.open * dome
    xs = mw * t
    lip = ident.lips
    skin_fold = _shade(ident.skin, 0.7)
    if e.cheek > 0.3:  # smile folds from the nose wings to beyond the mouth corners
        for side in (-1, 1):
            x0, y0 = side * 0.15, ident.nose_y + 0.02
            x1, y1 = side * (mw + 0.07), float(base[-1]) + 0.03
            mid = ((x0 + x1) / 2 + side * 0.04, (y0 + y1) / 2)
            c.line([(x0, y0), mid, (x1, y1)], 0.03 * min(1.0, e.cheek), skin_fold)
    if e.chin > 0.3:  # chin raised: a crease below the lower lip
        y = float(lower.max()) + 0.13
        c.line(_arc(-0.45 * mw, 0.45 * mw, y, -0.03, 7), 0.03 * min(1.0, e.chin), skin_fold)
    gap = lower - upper
    if gap.max() > 0.035:  # open: a dark cavity with teeth along the upper lip
        outline = [(float(x), float(y)) for x, y in zip(xs, upper, strict=True)]
        outline += [(float(x), float(y)) for x, y in zip(xs[::-1], lower[::-1], strict=True)]
        c.polygon(outline, (70, 18, 26))
        if e.teeth > 0.2:
            band = np.minimum(upper + 0.075 * min(1.0, e.teeth), lower)
            inner = 0.92
            teeth = [(float(x), float(y)) for x, y in zip(xs * inner, upper, strict=True)]
            teeth += [
                (float(x), float(y)) for x, y in zip(xs[::-1] * inner, band[::-1], strict=True)
            ]
            c.polygon(teeth, (240, 238, 228))
        c.line([*outline, outline[0]], 0.04, lip)
    else:  # closed: the lips' line, thinner and darker when pressed
        line = [(float(x), float(y)) for x, y in zip(xs, (upper + lower) / 2, strict=True)]
        pressed = e.chin > 0.5 or e.width < 0.85
        c.line(line, 0.045 if pressed else 0.06, _shade(lip, 0.6) if pressed else lip)


@lru_cache(maxsize=16)
def _vignette(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((x - (size - 1) / 2) ** 2 + (y - (size - 1) / 2) ** 2) / (size / 2) ** 2
    return (r2 / 2).astype(np.float32)[..., None]


def _backdrop(style: Style, size: int, rng: np.random.Generator) -> Image.Image:
    """The background at the output size, blown up to the oversampled size (it is smooth or
    has edges on output pixels); draws the same values for every style."""
    u = rng.random(6)
    blotches = rng.normal(0.0, 1.0, (5, 5))
    base = np.asarray(style.background, dtype=np.float32) + (u[0] - 0.5) * 16
    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    if style.backdrop == "studio":  # lit behind the head, falling off to the edges
        r2 = (x - 0.5) ** 2 + (y - 0.45) ** 2
        a = base + 30 * (0.3 - r2)
    elif style.backdrop == "mottled":  # a painted cloth: smooth blotches and a top-down fade
        small = Image.fromarray(((blotches * 0.25 + 0.5).clip(0, 1) * 255).astype(np.uint8))
        cloth = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), np.float32)
        a = base + (cloth[..., None] - 128) * 0.35 - 20 * y
    elif style.backdrop == "room":  # a dim wall with a bright window on the far side
        a = base - 10 * y + np.zeros((1, size, 1), np.float32)
        x0, x1 = 0.03 + 0.1 * u[1], 0.3 + 0.1 * u[2]
        y0, y1 = 0.05 + 0.1 * u[3], 0.45 + 0.15 * u[4]
        window = (x > x0) & (x < x1) & (y > y0) & (y < y1)
        a = np.where(window, np.float32(150 + 40 * u[5]), a)
    else:
        raise ValueError(f"unknown backdrop '{style.backdrop}'")
    a = np.broadcast_to(a, (size, size, 3))
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return img.resize((size * OVERSAMPLE, size * OVERSAMPLE), Image.Resampling.NEAREST)


def draw_face(
    emotion: int,
    style: int,
    identity: Identity,
    rng: np.random.Generator,
    size: int,
    *,
    intensity: float | None = None,
) -> Image.Image:
    """A ``size``×``size`` RGB picture of ``identity`` showing emotion ``emotion`` (an index
    into :data:`BASIC_EMOTIONS`), taken in :data:`STYLES` ``[style]``.

    The expression's intensity (0: neutral, 1: the prototype) is drawn from ``rng`` in
    [0.6, 1] unless given. ``rng`` is asked for the same number of values whatever the emotion,
    style and intensity, so two calls with equally seeded streams differ only where the
    arguments make them differ.
    """
    st = STYLES[style]
    big = size * OVERSAMPLE
    drawn_intensity = rng.uniform(0.6, 1.0)
    cue_noise = rng.normal(0.0, 1.0, len(fields(Expression)))
    jitter = rng.normal(0.0, 1.0, 6)
    sneer_side = 1 if rng.random() < 0.5 else -1
    e = sample_expression(emotion, drawn_intensity if intensity is None else intensity, cue_noise)
    img = _backdrop(st, size, rng)
    unit = st.scale * big / 2 * (1 + 0.03 * jitter[0]) / identity.face_h
    cx = big * (0.5 + st.offset[0] + 0.02 * jitter[1])
    cy = big * (0.5 + st.offset[1] + 0.02 * jitter[2])
    gaze = (float(np.clip(0.15 * jitter[4], -0.3, 0.3)), float(np.clip(0.1 * jitter[5], -0.2, 0.2)))
    roll = float(np.clip(4.0 * jitter[3], -9.0, 9.0))
    _draw_head(_Canvas(img, cx, cy, unit, roll), identity, e, gaze, sneer_side)
    img = img.reduce(OVERSAMPLE)  # a box filter: each output pixel averages its 4×4 block
    if st.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(st.blur))
    return _develop(img, st, rng)


def _develop(img: Image.Image, st: Style, rng: np.random.Generator) -> Image.Image:
    """The style's tone and colour, a small random exposure change, and sensor noise."""
    a = np.asarray(img, dtype=np.float32)
    grey = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    a = grey[..., None] + st.saturation * (a - grey[..., None])
    a = a * np.asarray(st.tint, dtype=np.float32) * (1 + 0.03 * rng.standard_normal())
    a = (a - 128) * st.contrast + 128 + st.brightness + 4 * rng.standard_normal()
    if st.vignette:
        a = a * (1 - st.vignette * _vignette(img.width))
    a += rng.standard_normal(a.shape, dtype=np.float32) * st.noise
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
