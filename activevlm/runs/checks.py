"""Checks of a selection request that run before any expensive work or any file is written."""

from __future__ import annotations

import os
from pathlib import Path

from activevlm.bayes.posterior import BayesVLMPosterior, PosteriorError
from activevlm.runs.queue import pool_image_root
from activevlm.utils.errors import ConfigError


def is_pool_dir(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def check_target(pool, target: str | None) -> None:
    """``target`` must be a domain of ``pool`` or a pool directory; else :class:`ConfigError`
    listing the pool's domains."""
    if target is None or is_pool_dir(target):
        return
    domains = sorted(pool.items["domain"].dropna().unique().tolist())
    if target not in domains:
        kind = "is not a pool directory nor" if ("/" in target or Path(target).exists()) \
            else "is not"
        raise ConfigError(f"--target {target!r} {kind} a domain of pool {pool.path}; its "
                          f"domains are {domains}")


def check_split(pool, split: str | None, option: str) -> None:
    """``split`` (None = all) must occur in ``pool``; else :class:`ConfigError`."""
    if split is None:
        return
    splits = sorted(pool.items["split"].dropna().unique().tolist())
    if split not in splits:
        raise ConfigError(f"{option} {split!r} is not a split of pool {pool.path}; its "
                          f"splits are {splits} (or 'all')")


def check_document_root(pool, root: str | Path | None) -> None:
    """The pool's images must lie below the Label Studio document ``root`` (None: the
    default, which they do); else :class:`ConfigError`."""
    if root is None:
        return
    images = pool_image_root(pool)
    rel = os.path.relpath(os.path.abspath(images), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ConfigError(f"--labelstudio-root {root}: the images of pool {pool.path} lie in "
                          f"{images}, outside that document root; name a folder above them")


def check_posterior(posterior: str | Path | None, pool) -> None:
    """An explicit posterior folder must load and be for ``pool``'s model."""
    if posterior is None:
        return
    post = BayesVLMPosterior.load(posterior)
    if post.model_id != pool.model_id:
        raise PosteriorError(f"posterior {posterior} is for model {post.model_id!r}, the pool "
                             f"{pool.path} for {pool.model_id!r}")
