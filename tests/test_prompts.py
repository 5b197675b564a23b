"""Prompt templates and class-name cleaning."""

from __future__ import annotations

import pytest

from activevlm.data.prompts import TEMPLATES, build_prompts, clean_classname, resolve_templates


def test_clean_classname():
    assert clean_classname("Alarm_Clock") == "Alarm Clock"
    assert clean_classname("  Real_World ") == "Real World"
    assert clean_classname("art__painting") == "art painting"
    assert clean_classname("kite (bird of prey)") == "kite (bird of prey)"


def test_registry_contents_match_open_clip():
    metadata = pytest.importorskip("open_clip.zero_shot_metadata")
    assert TEMPLATES["simple"] == ["a photo of a {}."]
    assert len(TEMPLATES["clip-imagenet"]) == 80
    assert TEMPLATES["clip-imagenet"] == [f("{}") for f in metadata.OPENAI_IMAGENET_TEMPLATES]
    assert TEMPLATES["clip-imagenet-simple"] == [
        f("{}") for f in metadata.SIMPLE_IMAGENET_TEMPLATES]
    for name, templates in TEMPLATES.items():
        assert resolve_templates(name) == templates  # every shipped set is valid
    assert len(set(TEMPLATES["domain-agnostic"])) == len(TEMPLATES["domain-agnostic"]) >= 5


def test_build_prompts_shape_and_content():
    prompts = build_prompts(["Alarm_Clock", "dog"], ["a photo of a {}.", "art of the {}."])
    assert prompts == [["a photo of a Alarm Clock.", "art of the Alarm Clock."],
                       ["a photo of a dog.", "art of the dog."]]
    assert build_prompts(["Alarm_Clock"], "simple", clean=False) == [["a photo of a Alarm_Clock."]]
    imagenet = build_prompts(["tench", "goldfish", "shark"], "clip-imagenet")
    assert [len(p) for p in imagenet] == [80, 80, 80]
    assert imagenet[1][0] == "a bad photo of a goldfish."
    assert build_prompts(["{weird}"], "simple") == [["a photo of a {weird}."]]


@pytest.mark.parametrize("bad", ["a photo.", "a {} and a {}.", "a {0}.", "a {} {{}}."])
def test_bad_templates_are_named(bad):
    with pytest.raises(ValueError, match="exactly one"):
        build_prompts(["dog"], ["a photo of a {}.", bad])


def test_unknown_template_set_and_empty_list():
    with pytest.raises(ValueError, match=r"unknown template set 'fancy'.*'clip-imagenet'"):
        build_prompts(["dog"], "fancy")
    with pytest.raises(ValueError, match="no prompt templates"):
        build_prompts(["dog"], [])
