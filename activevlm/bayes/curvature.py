"""Who computes the image projection's KFAC factors in labels mode: activevlm's analytic GGN
(:mod:`activevlm.bayes.kfac`) or laplace-torch's ``KronLaplace`` backend (curvlinops KFAC of
the exact GGN) on the same model, a bias-free linear projection followed by a cosine
cross-entropy over the fixed class text embeddings.

Both give the same ``A ⊗ B`` (checked to 1e-14 in float64 in
``tests/test_laplace_reference.py``); laplace-torch's factors are ``Σ aaᵀ / N`` and
``Σ H_i``, rescaled here to this package's ``Σ aaᵀ / √N`` and ``Σ H_i / √N``. laplace-torch
does not serve the rest: the text side's candidates are the batch's images (not fixed
classes), SigLIP's sigmoid loss is not a classification likelihood there, an image bias
gets its own factor (here it shares ``A`` as a constant-1 column), and its posterior
precision ``A ⊗ B + λI`` is not the damped ``Ã ⊗ B̃`` every predictive here relies on.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from activevlm.bayes.kfac import ActivationSource, KFACFactors, estimate_kfac
from activevlm.models.head import ProjectionHead
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import row_chunks, to_tensor
from activevlm.utils.validation import check_choice


class CurvatureBackend(StrEnum):
    """``"activevlm"`` (default, every mode and loss) or ``"laplace-torch"`` (labels mode,
    InfoNCE, no image bias or residual: CLIP heads)."""

    ACTIVEVLM = "activevlm"
    LAPLACE_TORCH = "laplace-torch"


class _CosineClassifier(nn.Module):
    """``s · cos(g, y_c)`` against fixed normalised class embeddings ``Y [C, D]``."""

    def __init__(self, Y: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("Y", Y)
        self.logit_scale = logit_scale

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(g, dim=-1) @ self.Y.T


def estimate_factors(
    head: ProjectionHead,
    image_act: ActivationSource,
    text_act: ActivationSource,
    *,
    backend: CurvatureBackend | str = CurvatureBackend.ACTIVEVLM,
    mode: str = "pairs",
    loss: str | None = None,
    batch_size: int = 4096,
    image_residual: ActivationSource | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> tuple[KFACFactors, KFACFactors]:
    """:func:`~activevlm.bayes.kfac.estimate_kfac` with the image factors from ``backend``
    (the text factors always come from activevlm; see the module docstring)."""
    backend = check_choice(backend, "backend", CurvatureBackend)
    image, text = estimate_kfac(head, image_act, text_act, mode=mode, loss=loss,
                                batch_size=batch_size, image_residual=image_residual,
                                device=device, progress=progress)
    if backend is CurvatureBackend.LAPLACE_TORCH:
        _check_laplace_torch_applies(head, mode, image.loss, image_residual)
        image = laplace_torch_image_factors(
            head, image_act, to_tensor(text_act[:]), batch_size=batch_size,
            device=resolve_device(device), dtype=torch.float32)
    return image, text


def _check_laplace_torch_applies(head: ProjectionHead, mode: str, loss: str,
                                 image_residual) -> None:
    """Refuse, naming the reason, what the laplace-torch backend cannot compute."""
    reasons = [why for bad, why in (
        (mode != "labels", f"mode={mode!r} (needs 'labels')"),
        (loss != "infonce", f"loss={loss!r} (needs 'infonce')"),
        (head.image_bias is not None, "an image bias"),
        (image_residual is not None, "an image residual"),
    ) if bad]
    if reasons:
        raise ValueError("curvature backend 'laplace-torch' covers labels-mode CLIP heads "
                         f"only; got {', '.join(reasons)}")


def laplace_torch_image_factors(
    head: ProjectionHead,
    image_act: ActivationSource,
    class_text_act: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> KFACFactors:
    """Image KFAC factors ``A [d_img, d_img]``, ``B [D, D]`` (float64, CPU) from
    laplace-torch's curvlinops GGN backend, batch by batch, scaled as ``estimate_kfac``'s."""
    # laplace-torch (and curvlinops) are heavy imports needed only for this backend
    from laplace.curvature import CurvlinopsGGN

    h = head.to(device, dtype)
    Y = F.normalize(h.text_embeddings(class_text_act.to(device, dtype)), dim=-1)
    projection = nn.Linear(h.image_dim, h.embed_dim, bias=False).to(device, dtype)
    projection.weight.data.copy_(h.image_weight)
    model = nn.Sequential(projection, _CosineClassifier(Y, float(h.logit_scale)))
    backend = CurvlinopsGGN(model, "classification")
    N = image_act.shape[0]
    A = torch.zeros(h.image_dim, h.image_dim, dtype=torch.float64, device=device)
    B = torch.zeros(h.embed_dim, h.embed_dim, dtype=torch.float64, device=device)
    for rows in row_chunks(N, batch_size):
        a = to_tensor(image_act[rows], device, dtype)
        labels = torch.zeros(a.shape[0], dtype=torch.long, device=device)  # GGN ignores them
        _, kron = backend.kron(a, labels, N=a.shape[0])
        B_batch, A_batch = kron.kfacs[0]  # Σ_batch H_i and Σ_batch aaᵀ / M
        A += A_batch.double() * a.shape[0]
        B += B_batch.double()
    r = math.sqrt(N)
    A, B = (A / r).cpu(), (B / r).cpu()
    return KFACFactors(0.5 * (A + A.T), 0.5 * (B + B.T), N, "infonce", False,
                       {"curvature_backend": CurvatureBackend.LAPLACE_TORCH.value})
