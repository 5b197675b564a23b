"""Laplace posterior over the two projections of a CLIP-style model (BayesVLM, MATH.md §1).

Each projection ``W [D, d]`` (``d = d_in``, or ``d_in + 1`` with the bias appended as the last
column) has the matrix-normal posterior ``MN(W*, rows B̃⁻¹, columns Ã⁻¹)`` with
``Ã = √n·A + √λ·I`` and ``B̃ = √n·B + √λ·I``. Only eigendecompositions of ``A`` and ``B`` are
stored; the ``(d·D)²`` covariance is never formed. The two modalities are independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import save_file

from activevlm.bayes.curvature import CurvatureBackend, estimate_factors
from activevlm.bayes.evidence import log_evidence, optimize_prior_precision
from activevlm.bayes.kfac import ActivationSource, KFACFactors
from activevlm.models.head import (
    ModelFileError,
    ProjectionHead,
    augment,
    read_safetensors,
    stack_bias,
)
from activevlm.utils.errors import ActiveVLMError
from activevlm.utils.io import atomic_path, atomic_write_json, read_json

FORMAT_VERSION = 1
_TENSORS_FILE = "posterior.safetensors"
_META_FILE = "posterior.json"
_HEAD_FILE = "head"


class PosteriorError(ActiveVLMError, ValueError):
    """A posterior folder that is missing, corrupt, non-finite or for another model."""


class PosteriorMissingError(PosteriorError, FileNotFoundError):
    """A posterior folder lacks one of its files."""


def posterior_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished :meth:`BayesVLMPosterior.save` (its metadata file
    is written last)."""
    return (Path(folder) / _META_FILE).is_file()


def _sym_eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix in float64, eigenvalues clamped at 0."""
    M = M.to(torch.float64)
    vals, vecs = torch.linalg.eigh(0.5 * (M + M.T))
    return vals.clamp_min(0.0), vecs


@dataclass
class ModalityPosterior:
    """Matrix-normal Laplace posterior of one projection.

    ``W_map [D, d]`` (SigLIP bias as last column when ``has_bias``), ``A [d, d]``,
    ``B [D, D]``, ``prior_precision`` λ > 0, ``pseudo_count`` n > 0. Derived quantities are
    computed once (float64 eigendecompositions) and cast to ``W_map``'s dtype/device.
    """

    W_map: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    prior_precision: float
    pseudo_count: float = 1.0
    has_bias: bool = False

    def __post_init__(self) -> None:
        D, d = self.W_map.shape
        if tuple(self.A.shape) != (d, d):
            raise ValueError(f"A must have shape [{d}, {d}] to match W_map {list(self.W_map.shape)}"
                             f" (bias column {'included' if self.has_bias else 'absent'}), "
                             f"got {list(self.A.shape)}")
        if tuple(self.B.shape) != (D, D):
            raise ValueError(f"B must have shape [{D}, {D}] to match W_map "
                             f"{list(self.W_map.shape)}, got {list(self.B.shape)}")
        if not self.prior_precision > 0:
            raise ValueError(f"prior_precision must be > 0, got {self.prior_precision}")
        if not self.pseudo_count > 0:
            raise ValueError(f"pseudo_count must be > 0, got {self.pseudo_count}")
        self.prior_precision = float(self.prior_precision)
        self.pseudo_count = float(self.pseudo_count)

    @property
    def out_dim(self) -> int:
        """D, the embedding dimension."""
        return self.W_map.shape[0]

    @property
    def in_dim(self) -> int:
        """d_in, the activation dimension (without the appended bias column)."""
        return self.W_map.shape[1] - int(self.has_bias)

    @cached_property
    def eig_A(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues ``[d]`` and eigenvectors ``[d, d]`` of ``A`` (float64)."""
        return _sym_eigh(self.A)

    @cached_property
    def eig_B(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues ``[D]`` and eigenvectors ``[D, D]`` of ``B`` (float64)."""
        return _sym_eigh(self.B)

    def _damped(self, vals: torch.Tensor) -> torch.Tensor:
        return self.pseudo_count ** 0.5 * vals + self.prior_precision ** 0.5

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.W_map.device, dtype=self.W_map.dtype)

    @cached_property
    def A_tilde_inv(self) -> torch.Tensor:
        """``Ã⁻¹ [d, d]``, the column covariance."""
        vals, vecs = self.eig_A
        return self._cast((vecs / self._damped(vals)) @ vecs.T)

    @cached_property
    def B_inv(self) -> torch.Tensor:
        """``B̃⁻¹ [D, D]``, the row covariance (damped: ``(√n·B + √λ·I)⁻¹``)."""
        vals, vecs = self.eig_B
        return self._cast((vecs / self._damped(vals)) @ vecs.T)

    @cached_property
    def L_A(self) -> torch.Tensor:
        """``[d, d]`` with ``L_A L_Aᵀ = Ã⁻¹``."""
        vals, vecs = self.eig_A
        return self._cast(vecs * self._damped(vals).rsqrt())

    @cached_property
    def L_B(self) -> torch.Tensor:
        """``[D, D]`` with ``L_B L_Bᵀ = B̃⁻¹``."""
        vals, vecs = self.eig_B
        return self._cast(vecs * self._damped(vals).rsqrt())

    def augment(self, act: torch.Tensor) -> torch.Tensor:
        """``[N, d_in] -> [N, d]`` (appends the constant 1 when the projection has a bias)."""
        if act.shape[-1] != self.in_dim:
            raise ValueError(f"activations have dim {act.shape[-1]}, expected {self.in_dim}")
        return augment(act.to(self.W_map), self.has_bias)

    def mean(self, act: torch.Tensor) -> torch.Tensor:
        """MAP embeddings ``W* ã``: ``[N, d_in] -> [N, D]``."""
        return self.augment(act) @ self.W_map.T

    def embedding_moments(
        self, act: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of ``g(a) = W ã (+ r)``: ``mean [N, D]`` and ``v [N]`` with
        ``Cov[g(a)] = v(a)·B̃⁻¹``, ``v(a) = ãᵀ Ã⁻¹ ã``. ``residual [N, D]`` is deterministic."""
        a = self.augment(act)
        mean = a @ self.W_map.T
        if residual is not None:
            mean = mean + residual.to(mean)
        v = ((a @ self.L_A) ** 2).sum(dim=1)
        return mean, v

    def cross_covariance_scalar(self, act1: torch.Tensor, act2: torch.Tensor) -> torch.Tensor:
        """``[N1, d_in] x [N2, d_in] -> [N1, N2]``: ``ã₁ᵀ Ã⁻¹ ã₂``, so that
        ``Cov(g(a₁), g(a₂)) = (ã₁ᵀ Ã⁻¹ ã₂)·B̃⁻¹``."""
        return (self.augment(act1) @ self.L_A) @ (self.augment(act2) @ self.L_A).T

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``k`` matrix-normal draws ``W* + L_B E L_Aᵀ``: ``[k, D, d]``.

        ``E`` is drawn on the CPU with ``generator`` (a CPU generator), so the same seed gives
        the same draws on every device.
        """
        D, d = self.W_map.shape
        E = torch.randn(k, D, d, generator=generator, dtype=self.W_map.dtype)
        E = E.to(self.W_map.device)
        return self.W_map + self.L_B @ E @ self.L_A.T

    def log_evidence(self, prior_precision: float | None = None) -> float:
        """Laplace log evidence (up to a λ-independent constant) at λ (default: own)."""
        lam = self.prior_precision if prior_precision is None else prior_precision
        return float(log_evidence(
            lam, float((self.W_map.double() ** 2).sum()), self.eig_A[0], self.eig_B[0],
            self.pseudo_count,
        ))

    def with_prior(
        self, prior_precision: float | None = None, pseudo_count: float | None = None
    ) -> ModalityPosterior:
        """A copy with another λ and/or n (eigendecompositions of A and B are reused)."""
        return self._reusing_eigs(ModalityPosterior(
            self.W_map, self.A, self.B,
            self.prior_precision if prior_precision is None else prior_precision,
            self.pseudo_count if pseudo_count is None else pseudo_count,
            self.has_bias,
        ))

    def recentred(self, W_map: torch.Tensor) -> ModalityPosterior:
        """A copy centred on ``W_map [D, d]`` (same A, B, λ, n; cast to this ``W_map``'s
        dtype/device; eigendecompositions reused)."""
        if tuple(W_map.shape) != tuple(self.W_map.shape):
            raise ValueError(f"new W_map has shape {list(W_map.shape)}, the posterior's is "
                             f"{list(self.W_map.shape)}")
        return self._reusing_eigs(ModalityPosterior(
            W_map.to(self.W_map), self.A, self.B, self.prior_precision, self.pseudo_count,
            self.has_bias,
        ))

    def _reusing_eigs(self, new: ModalityPosterior) -> ModalityPosterior:
        """``new`` (same A and B as ``self``) with ``self``'s cached eigendecompositions."""
        for name in ("eig_A", "eig_B"):
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def optimize_prior(self, **kwargs) -> ModalityPosterior:
        """A copy with the evidence-maximising λ (``kwargs`` go to
        :func:`activevlm.bayes.evidence.optimize_prior_precision`)."""
        lam = optimize_prior_precision(
            self.W_map, self.eig_A[0], self.eig_B[0], self.pseudo_count, **kwargs
        )
        return self.with_prior(prior_precision=lam)

    def to(self, device=None, dtype: torch.dtype | None = None) -> ModalityPosterior:
        """A copy with ``W_map``, ``A``, ``B`` moved/cast (derived caches are rebuilt)."""
        return ModalityPosterior(
            self.W_map.to(device=device, dtype=dtype), self.A.to(device=device, dtype=dtype),
            self.B.to(device=device, dtype=dtype), self.prior_precision, self.pseudo_count,
            self.has_bias,
        )


@dataclass
class JointWeightSample:
    """``k`` joint posterior draws: ``image [k, D, d_img(+1)]``, ``text [k, D, d_txt(+1)]``.

    Draw ``i`` of both projections belongs together (``i`` indexes one joint model); a bias,
    when present, is the last column.
    """

    image: torch.Tensor
    text: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]


def map_weight(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[D, d_in]`` (+ bias ``[D]``) -> ``[D, d_in(+1)]`` float32 (see ``stack_bias``)."""
    return stack_bias(weight.detach(), None if bias is None else bias.detach()).float()


@dataclass
class BayesVLMPosterior:
    """Independent Laplace posteriors of the image and text projections of ``head``.

    ``data_description`` records what the factors were fitted on (mode, loss, sample counts,
    source); it is saved with the posterior.
    """

    image: ModalityPosterior
    text: ModalityPosterior
    head: ProjectionHead
    model_id: str | None = None
    data_description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, post, W in (
            ("image", self.image, map_weight(self.head.image_weight, self.head.image_bias)),
            ("text", self.text, map_weight(self.head.text_weight, self.head.text_bias)),
        ):
            if tuple(post.W_map.shape) != tuple(W.shape):
                raise ValueError(f"{name} posterior W_map {list(post.W_map.shape)} does not "
                                 f"match the head's {name} projection {list(W.shape)}")

    @classmethod
    def from_head(
        cls,
        head: ProjectionHead,
        image_factors: KFACFactors,
        text_factors: KFACFactors,
        *,
        pseudo_count: float | tuple[float, float] = 1.0,
        prior_precision: float | tuple[float, float] | None = None,
        model_id: str | None = None,
        data_description: dict | None = None,
    ) -> BayesVLMPosterior:
        """Assemble a posterior from fitted factors; ``prior_precision=None`` maximises the
        Laplace evidence per modality. Scalars or ``(image, text)`` pairs are accepted."""
        n_img, n_txt = _pair(pseudo_count, "pseudo_count")
        lam_img, lam_txt = _pair(prior_precision, "prior_precision")
        for name, factors in (("image", image_factors), ("text", text_factors)):
            if not (torch.isfinite(factors.A).all() and torch.isfinite(factors.B).all()):
                raise PosteriorError(
                    f"the KFAC factors of the {name} projection contain NaN or inf: the "
                    f"activations they were fitted on are not finite; nothing was saved")
        posts = []
        for factors, W, has_bias, n, lam in (
            (image_factors, map_weight(head.image_weight, head.image_bias),
             head.image_bias is not None, n_img, lam_img),
            (text_factors, map_weight(head.text_weight, head.text_bias),
             head.text_bias is not None, n_txt, lam_txt),
        ):
            post = ModalityPosterior(W, factors.A.float().cpu(), factors.B.float().cpu(),
                                     1.0 if lam is None else lam, n, has_bias)
            posts.append(post.optimize_prior() if lam is None else post)
        desc = dict(data_description or {})
        desc.setdefault("image_factors", image_factors.summary())
        desc.setdefault("text_factors", text_factors.summary())
        return cls(posts[0], posts[1], head, model_id, desc)

    @classmethod
    def fit(
        cls,
        head: ProjectionHead,
        image_act: ActivationSource,
        text_act: ActivationSource,
        *,
        mode: str = "pairs",
        loss: str | None = None,
        batch_size: int = 4096,
        image_residual: ActivationSource | None = None,
        pseudo_count: float | tuple[float, float] = 1.0,
        prior_precision: float | tuple[float, float] | None = None,
        model_id: str | None = None,
        data_description: dict | None = None,
        device: str | torch.device | None = "auto",
        progress: bool = True,
        backend: CurvatureBackend | str = CurvatureBackend.ACTIVEVLM,
    ) -> BayesVLMPosterior:
        """Estimate KFAC factors on cached activations and build the posterior.

        ``mode="pairs"``: ``image_act [N, d_img]`` aligned with caption ``text_act [N, d_txt]``;
        ``mode="labels"``: ``text_act [C, d_txt]`` are class prompt activations (see
        :func:`activevlm.bayes.kfac.estimate_kfac` for both). ``prior_precision=None``
        maximises the evidence per modality. ``backend="laplace-torch"`` computes the image
        factors with laplace-torch (labels-mode CLIP heads; :mod:`activevlm.bayes.curvature`).
        """
        img_f, txt_f = estimate_factors(
            head, image_act, text_act, backend=backend, mode=mode, loss=loss,
            batch_size=batch_size, image_residual=image_residual, device=device,
            progress=progress,
        )
        return cls.from_head(
            head, img_f, txt_f, pseudo_count=pseudo_count, prior_precision=prior_precision,
            model_id=model_id, data_description=data_description,
        )

    def sample(self, k: int, generator: torch.Generator | None = None) -> JointWeightSample:
        """``k`` joint draws of both projections (image first, then text, from ``generator``)."""
        return JointWeightSample(self.image.sample(k, generator), self.text.sample(k, generator))

    def head_for_sample(self, draws: JointWeightSample, i: int) -> ProjectionHead:
        """The :class:`ProjectionHead` of joint draw ``i`` (bias split off the last column)."""

        def split(W: torch.Tensor, has_bias: bool):
            return (W[:, :-1], W[:, -1]) if has_bias else (W, None)

        iw, ib = split(draws.image[i], self.image.has_bias)
        tw, tb = split(draws.text[i], self.text.has_bias)
        h = self.head
        return ProjectionHead(iw, tw, h.logit_scale, ib, tb, h.logit_bias, dict(h.metadata))

    def optimize_prior(self, **kwargs) -> BayesVLMPosterior:
        """A copy with the evidence-maximising λ per modality."""
        return BayesVLMPosterior(self.image.optimize_prior(**kwargs),
                                 self.text.optimize_prior(**kwargs), self.head, self.model_id,
                                 dict(self.data_description))

    def to(self, device=None, dtype: torch.dtype | None = None) -> BayesVLMPosterior:
        """A copy with every tensor moved/cast."""
        return BayesVLMPosterior(self.image.to(device, dtype), self.text.to(device, dtype),
                                 self.head.to(device, dtype), self.model_id,
                                 dict(self.data_description))

    def save(self, folder: str | Path) -> None:
        """Write ``posterior.safetensors`` (A, B per modality), ``posterior.json`` (λ, n,
        model id, data description) and ``head.safetensors``/``head.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        meta: dict = {"format_version": FORMAT_VERSION, "model_id": self.model_id,
                      "data_description": self.data_description}
        for name, post in (("image", self.image), ("text", self.text)):
            tensors[f"{name}.A"] = post.A.detach().cpu().float().contiguous()
            tensors[f"{name}.B"] = post.B.detach().cpu().float().contiguous()
            meta[name] = {"prior_precision": post.prior_precision,
                          "pseudo_count": post.pseudo_count, "has_bias": post.has_bias}
        self.head.to("cpu").save(folder / _HEAD_FILE)
        with atomic_path(folder / _TENSORS_FILE) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(folder / _META_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> BayesVLMPosterior:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        for p in (folder / _TENSORS_FILE, folder / _META_FILE):
            if not p.exists():
                raise PosteriorMissingError(f"posterior file missing: {p}")
        meta_file = folder / _META_FILE
        try:
            meta = read_json(meta_file)
        except ValueError as e:
            raise PosteriorError(str(e)) from e
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else meta
            raise PosteriorError(f"{meta_file}: field 'format_version' is {version!r}, "
                                 f"expected {FORMAT_VERSION}")
        try:
            head = ProjectionHead.load(folder / _HEAD_FILE)
        except (ModelFileError, FileNotFoundError) as e:
            raise PosteriorError(f"posterior {folder}: {e}") from e
        t = read_safetensors(folder / _TENSORS_FILE, PosteriorError)
        posts = {}
        for name, W in (("image", map_weight(head.image_weight, head.image_bias)),
                        ("text", map_weight(head.text_weight, head.text_bias))):
            m = meta.get(name)
            for key in ("prior_precision", "pseudo_count", "has_bias"):
                if not isinstance(m, dict) or key not in m:
                    raise PosteriorError(f"{meta_file}: field '{name}.{key}' is missing")
            for key in (f"{name}.A", f"{name}.B"):
                if key not in t:
                    raise PosteriorError(f"{folder / _TENSORS_FILE} lacks the tensor {key!r}")
                if not torch.isfinite(t[key]).all():
                    raise PosteriorError(f"{folder / _TENSORS_FILE}: tensor {key!r} contains "
                                         "NaN or inf; refit the posterior")
            try:
                posts[name] = ModalityPosterior(W, t[f"{name}.A"], t[f"{name}.B"],
                                                float(m["prior_precision"]),
                                                float(m["pseudo_count"]), bool(m["has_bias"]))
            except (ValueError, TypeError) as e:
                raise PosteriorError(f"posterior {folder}, {name} projection: {e}") from e
        return cls(posts["image"], posts["text"], head, meta.get("model_id"),
                   meta.get("data_description", {}))


def _pair(x, name: str) -> tuple:
    """A scalar (or None) -> ``(x, x)``; a 2-sequence -> itself."""
    if x is None or isinstance(x, int | float):
        return x, x
    if len(x) != 2:
        raise ValueError(f"{name} must be a number or an (image, text) pair, got {x!r}")
    return tuple(x)


def fit_posterior(
    head: ProjectionHead, image_act: ActivationSource, text_act: ActivationSource, **kwargs
) -> BayesVLMPosterior:
    """Function form of :meth:`BayesVLMPosterior.fit`."""
    return BayesVLMPosterior.fit(head, image_act, text_act, **kwargs)
