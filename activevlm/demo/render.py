"""Render one object of the demo world in one of four styles (domains).

The domains differ the way OfficeHome's do, while the class is carried by the object's
structure alone (colours are drawn independently of the class):

- ``product``: a clean studio render, shaded fill, soft drop shadow, plain light background.
- ``photo``: the same filled object in a cluttered, out-of-focus scene, with textured fill, a
  colour cast, uneven lighting, sensor noise and blur.
- ``clipart``: flat colours, a thick black outline, a flat coloured background.
- ``sketch``: outlines only, thin wobbly pencil strokes on paper, no fill at all.

Everything is drawn at twice the output size and box-downsampled (anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from activevlm.demo.shapes import CLASSES, Part

DOMAINS: tuple[str, ...] = ("product", "photo", "clipart", "sketch")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "orange": (240, 135, 30), "yellow": (235, 205, 40),
    "green": (50, 165, 70), "blue": (40, 90, 215), "purple": (135, 60, 185),
    "pink": (235, 120, 170), "brown": (125, 80, 40), "teal": (30, 155, 155),
    "grey": (120, 120, 125),
}
_PENCILS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25), "grey": (90, 90, 95), "blue": (40, 60, 140), "brown": (90, 60, 35),
}


@dataclass(frozen=True)
class Rendered:
    """An image ``pixels [H, W, 3] uint8`` and the attributes its caption may mention."""

    pixels: np.ndarray
    colour: str
    size: str  # "small" | "medium" | "large"
    position: str  # "left" | "right" | "top" | "bottom" | "centre"
    background: str


def _place(parts: list[Part], rng: np.random.Generator, S: int, scale: tuple[float, float],
           max_rot: float, max_shift: float) -> tuple[list[tuple[np.ndarray, bool]], float,
                                                        np.ndarray]:
    """Random similarity transform (+ mild aspect jitter) of unit-coordinate parts to pixels."""
    s = rng.uniform(*scale)
    theta = np.deg2rad(rng.uniform(-max_rot, max_rot))
    aspect = np.exp(rng.uniform(-0.12, 0.12))
    shift = rng.uniform(-max_shift, max_shift, size=2) * (1 - s)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    A = R @ np.diag([aspect, 1 / aspect]) * s * (S / 2)
    centre = (shift + 1) * (S / 2)
    return [(p.points @ A.T + centre, p.hole) for p in parts], s, shift


def _mask(polys: list[tuple[np.ndarray, bool]], S: int) -> np.ndarray:
    """Silhouette ``[S, S]`` float in [0, 1]: parts painted in order, holes erase."""
    img = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(img)
    for pts, hole in polys:
        draw.polygon([tuple(p) for p in pts], fill=0 if hole else 255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _boundary_band(mask: np.ndarray, radius: int = 4) -> np.ndarray:
    """Pixels within about ``radius`` of the silhouette's boundary ``[S, S]`` in {0, 1}."""
    img = Image.fromarray((mask * 255).astype(np.uint8))
    blurred = np.asarray(img.filter(ImageFilter.BoxBlur(radius)), np.float32)
    return ((blurred > 2) & (blurred < 253)).astype(np.float32)


def _strokes(polys: list[tuple[np.ndarray, bool]], S: int, width: int,
             rng: np.random.Generator | None = None, wobble: float = 0.0) -> np.ndarray:
    """Outline of the silhouette ``[S, S]`` float in [0, 1], optionally with wobbly vertices.

    Every part's edge is traced, then only the strokes near the silhouette's boundary are
    kept, so seams between overlapping parts and the outside of holes are not drawn.
    """
    img = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(img)
    for pts, _ in polys:
        if rng is not None and wobble > 0:
            pts = pts + rng.normal(0, wobble, size=pts.shape)
        closed = [tuple(p) for p in pts] + [tuple(pts[0])]
        draw.line(closed, fill=255, width=width, joint="curve")
    return np.asarray(img, dtype=np.float32) / 255.0 * _boundary_band(_mask(polys, S))


def _jitter_colour(rgb: tuple[int, int, int], rng: np.random.Generator,
                   amount: float = 15.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _smooth_field(rng: np.random.Generator, S: int, cells: int, channels: int) -> np.ndarray:
    """A smooth random field ``[S, S, channels]`` in [0, 1] (bicubic upsampled noise)."""
    low = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    mode = "RGB" if channels == 3 else "L"
    img = Image.fromarray(low if channels == 3 else low[..., 0], mode)
    out = np.asarray(img.resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return out if channels == 3 else out[..., None]


def _attributes(s: float, shift: np.ndarray) -> tuple[str, str]:
    size = "small" if s < 0.55 else "large" if s > 0.72 else "medium"
    dx, dy = shift
    if max(abs(dx), abs(dy)) < 0.08:
        position = "centre"
    elif abs(dx) >= abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"
    return size, position


def render(classname: str, domain: str, rng: np.random.Generator, size: int = 64) -> Rendered:
    """Draw one ``classname`` object in style ``domain``; all randomness comes from ``rng``."""
    if classname not in CLASSES:
        raise ValueError(f"unknown demo class {classname!r}; known: {', '.join(CLASSES)}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown demo domain {domain!r}; known: {', '.join(DOMAINS)}")
    S = 2 * size
    parts = CLASSES[classname]()
    colour = str(rng.choice(list(COLOURS)))
    fg = _jitter_colour(COLOURS[colour], rng)
    ys = np.linspace(0.0, 1.0, S, dtype=np.float32)[:, None, None]

    if domain == "product":
        polys, s, shift = _place(parts, rng, S, (0.5, 0.85), 15, 0.3)
        m = _mask(polys, S)[..., None]
        bg = np.full((S, S, 3), rng.uniform(232, 252), np.float32) - 14 * ys
        off = rng.integers(3, 8, size=2)
        shadow = np.roll(m[..., 0], tuple(off[::-1]), axis=(0, 1))
        shadow = np.asarray(Image.fromarray((shadow * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(4)), np.float32)[..., None] / 255.0
        bg = bg * (1 - 0.35 * shadow)
        shade = 1.18 - 0.36 * ys
        img = bg * (1 - m) + np.clip(fg * shade, 0, 255) * m
        background = "white"
    elif domain == "photo":
        polys, s, shift = _place(parts, rng, S, (0.5, 0.85), 30, 0.6)
        m = _mask(polys, S)[..., None]
        img = 60 + 170 * _smooth_field(rng, S, int(rng.integers(3, 6)), 3)
        canvas = Image.fromarray(img.astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(3, 7))):
            c = tuple(int(v) for v in rng.integers(70, 200, 3))
            x0, y0 = rng.integers(-S // 4, S, 2)
            w, h = rng.integers(S // 10, S // 3, 2)
            box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=c)
        bg = np.asarray(canvas.filter(ImageFilter.GaussianBlur(5)), np.float32)
        texture = 0.88 + 0.24 * _smooth_field(rng, S, 16, 1)
        img = bg * (1 - m) + np.clip(fg * texture, 0, 255) * m
        angle = rng.uniform(0, 2 * np.pi)
        xs = np.linspace(-1, 1, S, dtype=np.float32)
        light = (np.cos(angle) * xs[None, :] + np.sin(angle) * xs[:, None])[..., None]
        img = img * (1 + rng.uniform(0.15, 0.4) * light) * rng.uniform(0.85, 1.15, 3)
        img = img + rng.normal(0, rng.uniform(4, 12), img.shape)
        background = "cluttered"
    elif domain == "clipart":
        polys, s, shift = _place(parts, rng, S, (0.5, 0.85), 10, 0.3)
        m = _mask(polys, S)[..., None]
        bg_name = str(rng.choice([c for c in COLOURS if c != colour]))
        bg = 0.45 * _jitter_colour(COLOURS[bg_name], rng, 8) + 0.55 * 250
        line = _strokes(polys, S, int(rng.integers(5, 8)))[..., None]
        img = bg * (1 - m) + fg * m
        img = img * (1 - line) + 15 * line
        background = f"plain {bg_name}"
    else:  # sketch
        polys, s, shift = _place(parts, rng, S, (0.5, 0.85), 20, 0.3)
        paper = np.array([250, 247, 238], np.float32) + rng.normal(0, 3, 3)
        img = np.broadcast_to(paper, (S, S, 3)) - 12 * _smooth_field(rng, S, 8, 1)
        pencil = str(rng.choice(list(_PENCILS)))
        ink = _jitter_colour(_PENCILS[pencil], rng, 10)
        line = _strokes(polys, S, int(rng.integers(2, 4)), rng, wobble=1.2)
        if rng.random() < 0.5:
            line = np.maximum(line, 0.7 * _strokes(polys, S, 2, rng, wobble=2.0))
        line = line[..., None]
        img = img * (1 - line) + ink * line
        colour = pencil
        background = "paper"

    pixels = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BOX)
    if domain == "photo" and rng.random() < 0.5:
        pixels = pixels.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    size_word, position = _attributes(s, shift)
    return Rendered(np.asarray(pixels), colour, size_word, position, background)
