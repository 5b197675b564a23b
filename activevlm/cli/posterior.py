"""``activevlm posterior fit``: estimate a BayesVLM posterior on a feature pool and save it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from activevlm.cli.pools import open_pool_or_demo, pool_folder, pool_option

console = Console(soft_wrap=True)
app = typer.Typer(help="Laplace posterior over the projections (BayesVLM).",
                  no_args_is_help=True)


@app.command("fit")
def fit(
    pool: Path | None = pool_option(),
    fit_mode: str = typer.Option("auto", "--fit-mode", help="pairs (images with captions), labels "
                             "(images against class prompts) or auto (pairs if the pool has "
                             "captions)."),
    pseudo_count: float = typer.Option(1.0, "--pseudo-count", min=0.0, help="Pseudo-data "
                                       "count n in Ã = √n·A + √λ·I."),
    prior_precision: float = typer.Option(None, "--prior-precision", help="Prior precision λ "
                                          "(default: maximise the Laplace evidence)."),
    split: str = typer.Option("train", "--split", help="Items to fit on ('all' for every "
                              "split)."),
    domain: list[str] = typer.Option(None, "--domain", help="Restrict to these domains "
                                     "(repeatable)."),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="Class-batch size of the "
                                   "contrastive GGN."),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed of the items."),
    out: Path = typer.Option(None, "--out", help="Posterior directory (default: "
                             "POOL/posterior)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:0."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit KFAC factors of both projections, pick λ, and save the posterior."""
    from activevlm.bayes.from_pool import fit_pool_posterior

    p = open_pool_or_demo(pool, progress)
    out = out or pool_folder(p, "posterior")
    post = fit_pool_posterior(
        p, mode=fit_mode, split=None if split == "all" else split, domain=domain or None,
        pseudo_count=pseudo_count, prior_precision=prior_precision, batch_size=batch_size,
        seed=seed, device=device, progress=progress,
    )
    post.save(out)
    desc = post.data_description
    console.print(f"fitted on {desc['n_images']} images of {p.path} (mode {desc['mode']}, "
                  f"split {split})")
    for name, m in (("image", post.image), ("text", post.text)):
        console.print(f"  {name}: W {list(m.W_map.shape)}, λ = {m.prior_precision:.4g}, "
                      f"n = {m.pseudo_count:g}, log evidence {m.log_evidence():.4g}")
    console.print(f"[green]posterior saved to {out}[/]")
