"""Class-name cleaning and prompt templates for zero-shot text classifiers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from activevlm.data.classlists import read_list

TEMPLATES: dict[str, list[str]] = {
    "simple": ["a photo of a {}."],
    # The 80 templates of the CLIP ImageNet prompt-engineering notebook, and its 7-subset.
    "clip-imagenet": list(read_list("clip_imagenet_templates")),
    "clip-imagenet-simple": list(read_list("clip_imagenet_simple_templates")),
    # One template per common depiction style, so that no single domain (photo, painting,
    # sketch, cartoon, clipart, product shot) is favoured when averaging the ensemble.
    "domain-agnostic": [
        "a photo of a {}.",
        "a painting of a {}.",
        "a drawing of a {}.",
        "a sketch of a {}.",
        "a cartoon of a {}.",
        "a clipart of a {}.",
        "a product photo of a {}.",
        "an image of a {}.",
    ],
}


def clean_classname(name: str) -> str:
    """Folder-style name to prompt text: underscores to spaces, runs of spaces collapsed."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def resolve_templates(templates: str | Sequence[str]) -> list[str]:
    """A registry name or a list of templates -> validated list (each has exactly one ``{}``
    and no other braces)."""
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(f"unknown template set {templates!r}; known: {sorted(TEMPLATES)} "
                             f"(or pass a list of templates with one '{{}}' each)")
        templates = TEMPLATES[templates]
    templates = list(templates)
    if not templates:
        raise ValueError("no prompt templates given")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1 \
                or template.replace("{}", "").count("{") + template.replace("{}", "").count("}"):
            raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}' "
                             f"and no other braces")
    return templates


def build_prompts(classnames: Sequence[str], templates: str | Sequence[str],
                  clean: bool = True) -> list[list[str]]:
    """Prompts ``[C][T]``: template t filled with class c (cleaned unless ``clean=False``)."""
    resolved = resolve_templates(templates)
    names = [clean_classname(c) if clean else c for c in classnames]
    return [[t.replace("{}", name) for t in resolved] for name in names]
