"""Import KFAC factor files published with BayesVLM (AaltoML/BayesVLM ``hessians/`` folders).

Expected files: ``A_img_analytic.pt`` ``[d_img(+1), d_img(+1)]``, ``B_img_analytic.pt``
``[D, D]``, ``A_txt_analytic.pt``, ``B_txt_analytic.pt`` and ``prior_precision_analytic.json``
(``lambda_img``, ``n_img``, ``lambda_txt``, ``n_txt``). The factors use the same scaling as
:mod:`activevlm.bayes.kfac` (``Σ aaᵀ/√N``, ``Σ H_i/√N``) and do not depend on whether a
projection is stored as ``x @ proj`` or as ``Linear.weight``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior, map_weight
from activevlm.models.head import ProjectionHead
from activevlm.utils.io import read_json

PRIOR_FILE = "prior_precision_analytic.json"


def _load_factor(path: Path, shape: tuple[int, int]) -> torch.Tensor:
    if not path.exists():
        raise FileNotFoundError(f"BayesVLM factor file missing: {path}")
    t = torch.load(path, map_location="cpu", weights_only=True)
    if not torch.is_tensor(t):
        raise ValueError(f"{path}: expected a tensor, found {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{path}: shape {list(t.shape)} does not match the head, "
                         f"expected {list(shape)}")
    return t.float()


def from_bayesvlm_files(
    folder: str | Path,
    head: ProjectionHead,
    pseudo_count: float | None = None,
    model_id: str | None = None,
) -> BayesVLMPosterior:
    """A :class:`BayesVLMPosterior` from a BayesVLM factor folder and the matching ``head``.

    λ per modality comes from the JSON; ``pseudo_count=None`` takes n from the JSON too,
    a number overrides it for both modalities.
    """
    folder = Path(folder)
    prior_path = folder / PRIOR_FILE
    if not prior_path.exists():
        raise FileNotFoundError(f"BayesVLM prior file missing: {prior_path}")
    prior = read_json(prior_path)
    posts = {}
    for key, name, W, has_bias in (
        ("img", "image", map_weight(head.image_weight, head.image_bias),
         head.image_bias is not None),
        ("txt", "text", map_weight(head.text_weight, head.text_bias),
         head.text_bias is not None),
    ):
        D, d = W.shape
        A = _load_factor(folder / f"A_{key}_analytic.pt", (d, d))
        B = _load_factor(folder / f"B_{key}_analytic.pt", (D, D))
        for field_name in (f"lambda_{key}", f"n_{key}"):
            if field_name not in prior:
                raise ValueError(f"{prior_path}: field {field_name!r} missing")
        n = float(prior[f"n_{key}"]) if pseudo_count is None else float(pseudo_count)
        posts[name] = ModalityPosterior(W, A, B, float(prior[f"lambda_{key}"]), n, has_bias)
    description = {"source": "bayesvlm_files", "folder": str(folder.resolve()),
                   "prior_file": {k: prior[k] for k in sorted(prior)}}
    return BayesVLMPosterior(posts["image"], posts["text"], head, model_id, description)
