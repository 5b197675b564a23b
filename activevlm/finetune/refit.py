"""Refitting the Laplace posterior after fine-tuning, so the next round scores with what was
learned (the BayesVLM reference code keeps the pre-trained posterior for every round).

Modes (:class:`RefitConfig`):

- ``"none"``: the posterior is returned as it is, still centred on the old head.
- ``"recentre"``: same KFAC factors, λ and n; the MAP ``W*`` of both projections becomes the
  fine-tuned weights.
- ``"recentre+update"``: recentre, then add the curvature of the labelled data: KFAC factors
  from a ``mode="labels"`` fit (:func:`activevlm.bayes.kfac.estimate_kfac`) with the new
  head, combined with the existing ones in the √N convention below; λ is then re-optimised
  by the Laplace evidence (``reoptimize_prior=True``) or kept.

Combining two factor sets. Factors are stored as ``A = S_A/√N`` and ``B = S_B/√N`` with the
sums ``S_A = Σ ã ãᵀ``, ``S_B = Σ H_i`` over ``N`` samples (so ``A ⊗ B = S_A ⊗ S_B / N``).
Two sets with ``N₁`` and ``N₂`` samples are turned back into sums, added and rescaled::

    A = (√N₁·A₁ + √N₂·A₂) / √(N₁ + N₂),     B likewise,

which equals the factors of one fit on the union of both data sets when both were computed
with the same head (and, for the text side of a labels-mode fit, the same class batches).
After fine-tuning the old sums were taken at the old weights: the update adds GGN terms
linearised at two points, the usual approximation of online Laplace. ``N₁`` comes from the
posterior's ``data_description["image_factors"|"text_factors"]["num_samples"]`` (written by
:meth:`BayesVLMPosterior.from_head` and by this function); posteriors that lack it (imported
BayesVLM files) need ``RefitConfig.prior_num_samples``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum

import torch

from activevlm.bayes.kfac import ActivationSource, KFACFactors, estimate_kfac
from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior
from activevlm.models.head import ProjectionHead, stack_bias
from activevlm.utils.constraints import Interval, check_constraints
from activevlm.utils.device import resolve_device


class RefitMode(StrEnum):
    """How a refit treats the posterior (module docstring)."""

    NONE = "none"
    RECENTRE = "recentre"
    RECENTRE_UPDATE = "recentre+update"


REFIT_MODES = tuple(m.value for m in RefitMode)


@dataclass
class RefitConfig:
    """How :func:`refit_posterior` updates the posterior after a fine-tuning round.

    ``mode``: one of :data:`REFIT_MODES` (module docstring); ``reoptimize_prior``: after an
    update, maximise the evidence in λ per modality (else keep λ; ``"recentre"`` always keeps
    it); ``batch_size``: images per class batch of the labels-mode KFAC fit (the text side
    has C samples per batch); ``prior_num_samples``: ``N`` of the existing factors, an int or
    ``(image, text)``; None takes the count the posterior records (it must then record one);
    ``device``: where the KFAC fit runs ("auto" = CUDA when present); ``calibrate``: after
    the refit, temper the posterior by the temperature that cross-fitting on the run's labels
    chooses (:mod:`activevlm.finetune.calibration`, ``calibration_folds`` parts; skipped
    with fewer than 2 labels per part).
    """

    mode: RefitMode = RefitMode.RECENTRE_UPDATE
    reoptimize_prior: bool = True
    batch_size: int = 4096
    prior_num_samples: int | tuple[int, int] | None = None
    device: str = "auto"
    calibrate: bool = True
    calibration_folds: int = 5

    _constraints = {
        "mode": [RefitMode],
        "reoptimize_prior": [bool],
        "batch_size": [Interval(1, None, integer=True)],
        "prior_num_samples": [None, Interval(1, None, integer=True), tuple, list],
        "device": [str],
        "calibrate": [bool],
        "calibration_folds": [Interval(2, None, integer=True)],
    }

    def __post_init__(self) -> None:
        check_constraints(self)
        if self.device != "auto":
            resolve_device(self.device)  # a typo or a missing GPU fails before any work


def combine_factor(
    F1: torch.Tensor, n1: int, F2: torch.Tensor, n2: int
) -> torch.Tensor:
    """``(√n1·F1 + √n2·F2) / √(n1 + n2)`` in float64: two √N-scaled KFAC factors (same
    shape) of ``n1`` and ``n2`` samples -> the factor of all ``n1 + n2`` samples."""
    if F1.shape != F2.shape:
        raise ValueError(f"cannot combine factors of shapes {list(F1.shape)} and "
                         f"{list(F2.shape)}")
    if n1 < 0 or n2 < 0 or n1 + n2 == 0:
        raise ValueError(f"sample counts must be >= 0 with a positive total, got {n1}, {n2}")
    F1, F2 = F1.detach().double().cpu(), F2.detach().double().cpu()
    return (math.sqrt(n1) * F1 + math.sqrt(n2) * F2) / math.sqrt(n1 + n2)


def _num_samples(posterior: BayesVLMPosterior, name: str, cfg: RefitConfig) -> int:
    recorded = posterior.data_description.get(f"{name}_factors", {}).get("num_samples")
    if cfg.prior_num_samples is not None:
        given = cfg.prior_num_samples
        return int(given if isinstance(given, int) else given[0 if name == "image" else 1])
    if recorded is None:
        raise ValueError(f"the posterior's data_description has no {name}_factors.num_samples "
                         f"(e.g. imported BayesVLM files): set RefitConfig.prior_num_samples")
    return int(recorded)


def _updated(post: ModalityPosterior, W: torch.Tensor, n_old: int, new: KFACFactors,
             reoptimize: bool) -> ModalityPosterior:
    if new.has_bias != post.has_bias:
        raise ValueError(f"new factors have has_bias={new.has_bias}, the posterior "
                         f"has_bias={post.has_bias}")
    A = combine_factor(post.A, n_old, new.A, new.num_samples).to(post.A.dtype)
    B = combine_factor(post.B, n_old, new.B, new.num_samples).to(post.B.dtype)
    out = ModalityPosterior(W.to(post.W_map), A, B, post.prior_precision, post.pseudo_count,
                            post.has_bias)
    return out.optimize_prior() if reoptimize else out


def refit_posterior(
    posterior: BayesVLMPosterior,
    new_head: ProjectionHead,
    image_act: ActivationSource | None = None,
    class_text_act: ActivationSource | None = None,
    *,
    image_residual: ActivationSource | None = None,
    config: RefitConfig | None = None,
    progress: bool = True,
) -> BayesVLMPosterior:
    """The posterior for the next round, after ``posterior.head`` was fine-tuned into
    ``new_head`` (same shapes, same logit scale and bias).

    ``image_act [N, d_img]`` are the labelled images' activations, ``class_text_act
    [C, d_txt]`` the class prompt activations and ``image_residual [N, D]`` SigLIP's residual;
    they are needed by ``"recentre+update"`` only. Labels are not: the GGN of the
    cross-entropy does not depend on them. The loss of the update (InfoNCE or sigmoid) is the
    one the existing factors were fitted with. ``data_description`` gains a ``refits`` entry
    and, after an update, the combined sample counts.
    """
    cfg = config or RefitConfig()
    if cfg.mode == "none":
        return posterior
    for attr in ("logit_scale", "logit_bias"):
        if getattr(new_head, attr) != getattr(posterior.head, attr):
            raise ValueError(f"new_head.{attr} = {getattr(new_head, attr)} differs from the "
                             f"posterior head's {getattr(posterior.head, attr)}: fine-tuning "
                             f"keeps it fixed, refit a posterior for the other head instead")
    W_img = stack_bias(new_head.image_weight, new_head.image_bias).detach()
    W_txt = stack_bias(new_head.text_weight, new_head.text_bias).detach()
    desc = dict(posterior.data_description)
    record: dict = {"mode": cfg.mode}

    if cfg.mode == "recentre":
        image = posterior.image.recentred(W_img)
        text = posterior.text.recentred(W_txt)
    else:
        if image_act is None or class_text_act is None:
            raise ValueError("mode 'recentre+update' needs image_act (the labelled images) and "
                             "class_text_act (the class prompts)")
        n_img, n_txt = _num_samples(posterior, "image", cfg), _num_samples(posterior, "text", cfg)
        loss = desc.get("image_factors", {}).get("loss")
        img_f, txt_f = estimate_kfac(
            new_head, image_act, class_text_act, mode="labels", loss=loss,
            batch_size=cfg.batch_size, image_residual=image_residual, device=cfg.device,
            progress=progress,
        )
        image = _updated(posterior.image, W_img, n_img, img_f, cfg.reoptimize_prior)
        text = _updated(posterior.text, W_txt, n_txt, txt_f, cfg.reoptimize_prior)
        for name, old_n, f in (("image", n_img, img_f), ("text", n_txt, txt_f)):
            desc[f"{name}_factors"] = {**desc.get(f"{name}_factors", {}),
                                       "num_samples": old_n + f.num_samples, "loss": f.loss}
        record.update(num_images=img_f.num_samples, text_samples_added=txt_f.num_samples,
                      loss=img_f.loss)
    record.update(config={k: v for k, v in asdict(cfg).items() if k != "mode"},
                  prior_precision={"image": image.prior_precision,
                                   "text": text.prior_precision})
    desc["refits"] = [*desc.get("refits", []), record]
    return BayesVLMPosterior(image, text, new_head, posterior.model_id, desc)
