"""Captions of demo images, and the class prompts the demo model is evaluated with.

Captions mix several templates and the attributes an image was drawn with (colour, size,
position, background, style word), so the text tower learns more than the class names.
Class prompts (``PROMPT_TEMPLATES``) are phrased like some of the captions.
"""

from __future__ import annotations

import re

import numpy as np

from activevlm.demo.render import Rendered

PROMPT_TEMPLATES: tuple[str, ...] = ("a picture of the {}.", "an image of the {}.", "{}.")
"""Zero-shot class prompts (one ``{}`` for the class name)."""

STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "product": ("product render", "studio render", "clean render", "product shot"),
    "photo": ("photo", "photograph", "snapshot", "cluttered photo"),
    "clipart": ("clipart", "cartoon", "flat illustration"),
    "sketch": ("sketch", "pencil drawing", "line drawing"),
}
_WHERE = {"left": "on the left", "right": "on the right", "top": "near the top",
          "bottom": "near the bottom", "centre": "in the centre"}
_TEMPLATES: tuple[str, ...] = (
    "{cls}.",
    "a picture of the {cls}.",
    "an image of the {cls}.",
    "a {colour} {cls}.",
    "a {style} of a {colour} {cls}.",
    "a {size} {colour} {cls} {where}.",
    "a {style} of a {cls} on a {background} background.",
    "the {cls} {where}, in {colour}.",
    "there is a {size} {cls} {where} in this {style}.",
    "a {colour} {cls} on a {background} background.",
    "{style}: a {size} {cls}.",
)
_ARTICLE = re.compile(r"\ba ([aeiou])")


def caption(classname: str, domain: str, image: Rendered, rng: np.random.Generator) -> str:
    """One caption for ``image`` of ``classname`` in ``domain`` (template drawn from ``rng``)."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    styles = STYLE_WORDS[domain]
    text = template.format(
        cls=classname, colour=image.colour, size=image.size, where=_WHERE[image.position],
        background=image.background, style=styles[int(rng.integers(len(styles)))],
    )
    return _ARTICLE.sub(r"an \1", text)
