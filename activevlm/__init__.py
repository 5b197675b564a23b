"""activevlm: choose which unlabelled images to label next when adapting a CLIP/SigLIP model."""

__version__ = "0.1.0"
