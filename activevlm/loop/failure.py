"""Failure probabilities of the current head for the ``vilu`` strategies of a loop round."""

from __future__ import annotations

import numpy as np
import torch

from activevlm.acquisition import map_probs
from activevlm.models.head import ProjectionHead
from activevlm.vilu import ViLUConfig, failure_scores, fit_vilu, zero_shot_correct


@torch.no_grad()
def msp_failure(pool, head: ProjectionHead) -> np.ndarray:
    """``1 − max_c p(c)`` ``[N]`` of ``head`` (through its link) over all pool rows."""
    return 1.0 - map_probs(pool, head, np.arange(len(pool.items))).max(1).astype(np.float64)


def failure_probabilities(pool, head: ProjectionHead, rows: np.ndarray, labels: np.ndarray,
                          config: ViLUConfig, min_labels: int = 20, device: str = "auto",
                          progress: bool = False) -> tuple[np.ndarray, str]:
    """``(p_fail [N], source)`` for every pool row under ``head``.

    ``source == "vilu"``: a ViLU model trained on whether ``head`` classifies the labelled
    ``rows`` (labels ``labels``) correctly; ``"msp"``: 1 − max probability, used when there
    are fewer than ``min_labels`` labels or fewer than 2 right or 2 wrong (ViLU holds out at
    least one of each for validation).
    """
    if len(rows) >= min_labels:
        with torch.no_grad():
            img = pool.image_embeddings(rows, head)
            txt = head.text_embeddings(torch.from_numpy(pool.text_activations))
        correct = zero_shot_correct(img, txt, labels)
        if 2 <= correct.sum() <= len(correct) - 2:
            model = fit_vilu(img, txt, correct, config=config, logit_scale=head.logit_scale,
                             model_id="", device=device, progress=progress)
            with torch.no_grad():
                all_img = pool.image_embeddings(head=head)
            return failure_scores(model, (all_img, txt), device=device).astype(np.float64), \
                "vilu"
    return msp_failure(pool, head), "msp"
