"""Laplace posteriors over the projection heads (BayesVLM): KFAC curvature, evidence-optimal
prior precision, ProbCosine logit moments and joint weight draws shared by every input."""

from activevlm.bayes.bayesvlm_io import from_bayesvlm_files
from activevlm.bayes.curvature import CurvatureBackend, estimate_factors
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.evidence import log_evidence, optimize_prior_precision
from activevlm.bayes.from_pool import FIT_MODES, fit_pool_posterior
from activevlm.bayes.kfac import KFACFactors, estimate_kfac, ggn_sum
from activevlm.bayes.posterior import (
    BayesVLMPosterior,
    JointWeightSample,
    ModalityPosterior,
    fit_posterior,
)
from activevlm.bayes.probcosine import (
    cosine_moments,
    logit_moments,
    mc_logits,
    mc_probs,
    probit_probs,
)

__all__ = [
    "FIT_MODES",
    "BayesVLMPosterior",
    "CurvatureBackend",
    "JointDraws",
    "JointWeightSample",
    "KFACFactors",
    "ModalityPosterior",
    "cosine_moments",
    "estimate_factors",
    "estimate_kfac",
    "fit_pool_posterior",
    "fit_posterior",
    "from_bayesvlm_files",
    "ggn_sum",
    "log_evidence",
    "logit_moments",
    "mc_logits",
    "mc_probs",
    "optimize_prior_precision",
    "probit_probs",
]
