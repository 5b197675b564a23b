"""A trained ViLU predictor: the network plus what it was trained for, prediction, save/load."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.special import expit

from activevlm.utils.device import resolve_device
from activevlm.utils.io import atomic_path, atomic_write_json, read_json
from activevlm.utils.tensors import row_chunks
from activevlm.vilu.model import ViLU, ViLUConfig

FORMAT = "activevlm-vilu"
FORMAT_VERSION = 1


def as_tensor(x, name: str) -> torch.Tensor:
    """A float32 CPU tensor from an array-like, or a clear error naming ``name``."""
    try:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}") from e


def failure_probability(logits) -> np.ndarray:
    """``sigmoid(-logit)`` ``[N]`` (float64) from logits of P(correct) ``[N]``, without overflow."""
    return expit(-np.asarray(logits, dtype=np.float64))


@dataclass
class ViLUModel:
    """A ViLU network with its config, the model id it was trained for and training record.

    ``history``: one dict per epoch (``epoch``, ``train_loss``, ``val_auroc``);
    ``failure_weight``: the loss weight of failures (None when computed per batch).
    """

    net: ViLU
    config: ViLUConfig
    model_id: str
    logit_scale: float
    failure_weight: float | None = None
    best_epoch: int = 0
    val_auroc: float = float("nan")
    history: list[dict] = field(default_factory=list)

    @property
    def embed_dim(self) -> int:
        return self.net.embed_dim

    @torch.no_grad()
    def predict_logits(
        self,
        image_emb,
        text_emb,
        mask=None,
        *,
        batch_size: int = 4096,
        device: str | torch.device = "auto",
    ) -> np.ndarray:
        """Logits of P(correct) ``[N]``.

        Class setting: ``text_emb [C, D]`` shared by all images, optional ``mask [N, C]``.
        Caption setting: ``text_emb [N, D]`` paired with the images; each consecutive batch
        of ``config.batch_size`` images competes over its own captions (``mask`` unused).
        """
        img = as_tensor(image_emb, "image_emb")
        txt = as_tensor(text_emb, "text_emb")
        dev = resolve_device(device)
        net = self.net.to(dev).eval()
        if self.config.setting == "captions":
            if mask is not None:
                raise ValueError("the caption setting builds its candidates per batch; no mask")
            if txt.shape[0] != img.shape[0]:
                raise ValueError(
                    f"caption setting needs one caption per image: {img.shape[0]} images, "
                    f"{txt.shape[0]} captions"
                )
            chunks = row_chunks(img.shape[0], self.config.batch_size)
            out = [net(img[c].to(dev), txt[c].to(dev)).cpu() for c in chunks]
        else:
            m = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool)
            t = txt.to(dev)
            out = [
                net(img[c].to(dev), t, None if m is None else m[c].to(dev)).cpu()
                for c in row_chunks(img.shape[0], batch_size)
            ]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def predict_failure(self, image_emb, text_emb, mask=None, **kwargs) -> np.ndarray:
        """Failure probabilities ``sigmoid(-logit)`` ``[N]`` (arguments as ``predict_logits``)."""
        return failure_probability(self.predict_logits(image_emb, text_emb, mask, **kwargs))

    def save(self, path: str | Path) -> None:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config, model id, record)."""
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        if self.config.tie_kv:
            state.pop("w_v.weight", None)  # the same tensor as w_k.weight
        with atomic_path(path.with_suffix(".safetensors")) as tmp:
            save_file(state, str(tmp))
        atomic_write_json(path.with_suffix(".json"), {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model_id": self.model_id,
            "embed_dim": self.embed_dim, "logit_scale": self.logit_scale,
            "config": asdict(self.config), "failure_weight": self.failure_weight,
            "best_epoch": self.best_epoch,
            "val_auroc": None if np.isnan(self.val_auroc) else self.val_auroc,
            "history": self.history,
        })

    @classmethod
    def load(cls, path: str | Path, expected_model_id: str | None = None) -> ViLUModel:
        """Load a saved predictor; with ``expected_model_id``, refuse one trained for another
        model."""
        path = Path(path)
        st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
        for p in (st, js):
            if not p.exists():
                raise FileNotFoundError(f"ViLU model file missing: {p}")
        meta = read_json(js)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{js} is not a ViLU model (format {meta.get('format')!r})")
        if expected_model_id is not None and meta["model_id"] != expected_model_id:
            raise ValueError(
                f"ViLU model {js} was trained for model {meta['model_id']!r}, but the pool "
                f"uses {expected_model_id!r}; train a ViLU for this model"
            )
        config = ViLUConfig(**meta["config"])
        net = ViLU(int(meta["embed_dim"]), config, float(meta["logit_scale"]))
        state = load_file(str(st))
        if config.tie_kv:
            state["w_v.weight"] = state["w_k.weight"]
        net.load_state_dict(state)
        return cls(net, config, meta["model_id"], float(meta["logit_scale"]),
                   meta["failure_weight"], int(meta["best_epoch"]),
                   float("nan") if meta["val_auroc"] is None else float(meta["val_auroc"]),
                   list(meta["history"]))
