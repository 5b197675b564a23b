"""The demo world's object classes: each one is a structure of polygons, never a colour.

A class is a list of ``Part`` objects in unit coordinates (x right, y down, the object
roughly inside ``[-1, 1]^2``). A part is a closed polygon that is either added to the
object's silhouette or cut out of it (a hole), so a ring and a disc differ by structure.
Renderers (``activevlm.demo.render``) fill the silhouette, trace its edges, or both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Part:
    """One closed polygon ``points [K, 2]`` in unit coordinates; ``hole`` cuts it out."""

    points: np.ndarray
    hole: bool = False


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0,
             a1: float = 2 * np.pi, k: int = 40) -> np.ndarray:
    """Points of an ellipse arc ``[k, 2]`` from angle a0 to a1 (a full turn by default)."""
    t = np.linspace(a0, a1, k, endpoint=(a1 - a0) < 2 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _regular(n: int, r: float, phase: float = -np.pi / 2, cx: float = 0.0,
             cy: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _bar(p: tuple[float, float], q: tuple[float, float], w: float) -> np.ndarray:
    """A rectangle of width ``w`` along the segment p -> q."""
    p_, q_ = np.asarray(p, float), np.asarray(q, float)
    d = q_ - p_
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-12) * (w / 2)
    return np.stack([p_ + n, q_ + n, q_ - n, p_ - n])


def _star(n: int, r_out: float, r_in: float) -> np.ndarray:
    t = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def circle() -> list[Part]:
    return [Part(_ellipse(0, 0, 0.9, 0.9))]


def square() -> list[Part]:
    return [Part(_rect(-0.8, -0.8, 0.8, 0.8))]


def triangle() -> list[Part]:
    return [Part(np.array([[0.0, -0.9], [0.9, 0.75], [-0.9, 0.75]]))]


def star() -> list[Part]:
    return [Part(_star(5, 0.95, 0.4))]


def cross() -> list[Part]:
    return [Part(_rect(-0.25, -0.9, 0.25, 0.9)), Part(_rect(-0.9, -0.25, 0.9, 0.25))]


def ring() -> list[Part]:
    return [Part(_ellipse(0, 0, 0.9, 0.9)), Part(_ellipse(0, 0, 0.5, 0.5), hole=True)]


def arrow() -> list[Part]:
    return [Part(np.array([[-0.9, -0.2], [0.2, -0.2], [0.2, -0.6], [0.9, 0.0],
                           [0.2, 0.6], [0.2, 0.2], [-0.9, 0.2]]))]


def crescent() -> list[Part]:
    return [Part(_ellipse(0, 0, 0.85, 0.85)), Part(_ellipse(0.4, -0.15, 0.7, 0.7), hole=True)]


def hexagon() -> list[Part]:
    return [Part(_regular(6, 0.9, phase=0.0))]


def diamond() -> list[Part]:
    return [Part(np.array([[0.0, -0.95], [0.6, 0.0], [0.0, 0.95], [-0.6, 0.0]]))]


def heart() -> list[Part]:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [Part(np.stack([x, y + 2.5], axis=1) / 17.5)]


def house() -> list[Part]:
    return [Part(_rect(-0.65, -0.1, 0.65, 0.85)),
            Part(np.array([[-0.9, -0.1], [0.0, -0.9], [0.9, -0.1]])),
            Part(_rect(-0.15, 0.35, 0.15, 0.85), hole=True)]


def tree() -> list[Part]:
    return [Part(np.array([[0.0, -0.95], [0.45, -0.35], [-0.45, -0.35]])),
            Part(np.array([[0.0, -0.6], [0.65, 0.1], [-0.65, 0.1]])),
            Part(np.array([[0.0, -0.2], [0.85, 0.55], [-0.85, 0.55]])),
            Part(_rect(-0.13, 0.55, 0.13, 0.95))]


def car() -> list[Part]:
    return [Part(_rect(-0.95, -0.1, 0.95, 0.4)),
            Part(np.array([[-0.5, -0.1], [-0.3, -0.55], [0.35, -0.55], [0.55, -0.1]])),
            Part(_ellipse(-0.5, 0.45, 0.25, 0.25)),
            Part(_ellipse(0.5, 0.45, 0.25, 0.25))]


def key() -> list[Part]:
    return [Part(_ellipse(-0.55, 0.0, 0.38, 0.38)),
            Part(_ellipse(-0.55, 0.0, 0.17, 0.17), hole=True),
            Part(_rect(-0.2, -0.1, 0.95, 0.1)),
            Part(_rect(0.5, 0.1, 0.62, 0.35)),
            Part(_rect(0.78, 0.1, 0.9, 0.3))]


def mushroom() -> list[Part]:
    cap = _ellipse(0, -0.05, 0.9, 0.8, np.pi, 2 * np.pi, k=30)
    return [Part(cap), Part(_rect(-0.22, -0.05, 0.22, 0.85))]


def umbrella() -> list[Part]:
    canopy = _ellipse(0, -0.1, 0.95, 0.7, np.pi, 2 * np.pi, k=30)
    hook = _ellipse(0.15, 0.75, 0.15, 0.15, 0.0, np.pi, k=10)
    return [Part(canopy), Part(_rect(-0.05, -0.1, 0.05, 0.75)),
            Part(np.concatenate([hook + [0, 0.04], hook[::-1] - [0, 0.04]]))]


def cup() -> list[Part]:
    return [Part(_ellipse(0.45, 0.05, 0.35, 0.35)),
            Part(_ellipse(0.45, 0.05, 0.2, 0.2), hole=True),
            Part(np.array([[-0.6, -0.6], [0.35, -0.6], [0.25, 0.75], [-0.5, 0.75]]))]


def dumbbell() -> list[Part]:
    return [Part(_ellipse(-0.62, 0, 0.33, 0.33)), Part(_ellipse(0.62, 0, 0.33, 0.33)),
            Part(_rect(-0.4, -0.08, 0.4, 0.08))]


def flag() -> list[Part]:
    return [Part(_rect(-0.75, -0.9, -0.62, 0.95)), Part(_rect(-0.62, -0.9, 0.85, -0.1))]


def ladder() -> list[Part]:
    parts = [Part(_rect(-0.55, -0.95, -0.4, 0.95)), Part(_rect(0.4, -0.95, 0.55, 0.95))]
    parts += [Part(_rect(-0.4, y - 0.06, 0.4, y + 0.06)) for y in (-0.6, -0.2, 0.2, 0.6)]
    return parts


def fish() -> list[Part]:
    return [Part(_ellipse(-0.15, 0, 0.65, 0.38)),
            Part(np.array([[0.4, 0.0], [0.95, -0.45], [0.95, 0.45]])),
            Part(_ellipse(-0.5, -0.08, 0.08, 0.08), hole=True)]


def bell() -> list[Part]:
    top = _ellipse(0, -0.35, 0.45, 0.5, np.pi, 2 * np.pi, k=20)
    body = np.concatenate([top, [[0.6, 0.55], [0.8, 0.65], [-0.8, 0.65], [-0.6, 0.55]]])
    return [Part(body), Part(_ellipse(0, 0.78, 0.16, 0.16))]


def snowman() -> list[Part]:
    return [Part(_ellipse(0, 0.45, 0.5, 0.5)), Part(_ellipse(0, -0.2, 0.36, 0.36)),
            Part(_ellipse(0, -0.7, 0.25, 0.25))]


def lightning() -> list[Part]:
    return [Part(np.array([[0.15, -0.95], [-0.5, 0.1], [-0.05, 0.1], [-0.25, 0.95],
                           [0.5, -0.15], [0.05, -0.15], [0.3, -0.95]]))]


CLASSES: dict[str, Callable[[], list[Part]]] = {
    f.__name__: f
    for f in sorted((circle, square, triangle, star, cross, ring, arrow, crescent, hexagon,
                     diamond, heart, house, tree, car, key, mushroom, umbrella, cup, dumbbell,
                     flag, ladder, fish, bell, snowman, lightning), key=lambda f: f.__name__)
}
"""Class name -> its parts, sorted by name (label i is ``list(CLASSES)[i]``)."""
