"""ProjectionHead.probs: the head's logits through its link, against explicit formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activevlm.models import ProjectionHead


@pytest.mark.parametrize("logit_bias", [None, -3.0])
def test_probs_follow_the_link_of_the_head(logit_bias):
    g = torch.Generator().manual_seed(0)
    head = ProjectionHead(torch.randn(6, 5, generator=g), torch.randn(6, 4, generator=g), 7.0,
                          logit_bias=logit_bias)
    img, txt = torch.randn(3, 6, generator=g), torch.randn(4, 6, generator=g)
    a = img.numpy() / np.linalg.norm(img.numpy(), axis=1, keepdims=True)
    t = txt.numpy() / np.linalg.norm(txt.numpy(), axis=1, keepdims=True)
    logits = 7.0 * a @ t.T + (logit_bias or 0.0)
    if logit_bias is None:
        expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    else:
        q = 1 / (1 + np.exp(-logits))
        expected = q / q.sum(1, keepdims=True)
    assert head.link == ("softmax" if logit_bias is None else "sigmoid")
    assert np.allclose(head.probs(img, txt).numpy(), expected, atol=1e-6)
