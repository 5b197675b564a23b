"""``activevlm vilu train|eval``: the ViLU failure predictor on a feature pool."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from activevlm.cli.pools import open_pool_or_demo, pool_option

console = Console()
app = typer.Typer(help="ViLU failure predictor: train on a pool, compare with baselines.",
                  no_args_is_help=True)


def _split(split: str) -> str | None:
    return None if split == "all" else split


def _failure_weight(value: str) -> str | float:
    if value in ("dataset", "batch"):
        return value
    try:
        return float(value)
    except ValueError:
        msg = f"--failure-weight must be dataset, batch or a number, got {value!r}"
        raise ValueError(msg) from None


@app.command("train")
def train(
    pool: Path | None = pool_option(),
    split: str = typer.Option("train", "--split", help="Items to train on ('all' for every "
                              "split)."),
    domain: list[str] = typer.Option(None, "--domain", help="Restrict to these domains "
                                     "(repeatable)."),
    out: Path = typer.Option(None, "--out", help="Model path without suffix; writes "
                             "OUT.safetensors and OUT.json (default: POOL/../vilu-<pool name>)."),
    setting: str = typer.Option("classes", "--setting", help="classes (zero-shot correctness) "
                                "or captions (retrieval among the batch's captions)."),
    epochs: int = typer.Option(100, "--epochs", min=1),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd (cosine schedule)."),
    failure_weight: str = typer.Option("dataset", "--failure-weight", help="dataset, batch or "
                                       "a number: loss weight of failures."),
    heads: int = typer.Option(1, "--heads", min=1, help="Cross-attention heads."),
    patience: int = typer.Option(10, "--patience", min=1, help="Epochs without a better "
                                 "validation AUROC before stopping."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:0."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train ViLU on the zero-shot correctness of the pool's model over labelled items."""
    from activevlm.vilu import ViLUConfig, fit_vilu_on_pool

    weight = _failure_weight(failure_weight)
    config = ViLUConfig(setting=setting, epochs=epochs, batch_size=batch_size, lr=lr,
                        optimizer=optimizer, failure_weight=weight, num_heads=heads,
                        patience=patience, seed=seed)
    p = open_pool_or_demo(pool)
    model = fit_vilu_on_pool(p, split=_split(split), domain=domain or None, config=config,
                             device=device, progress=progress)
    out = out or p.path.parent / f"vilu-{p.path.name}"
    model.save(out)
    console.print(
        f"[green]ViLU saved to {out}.safetensors/.json[/] (model {model.model_id}): best "
        f"validation AUROC {model.val_auroc:.3f} at epoch {model.best_epoch}"
        + ("" if model.failure_weight is None else
           f", failure weight {model.failure_weight:.3f}")
    )


@app.command("eval")
def evaluate(
    pool: Path | None = pool_option(),
    model: Path = typer.Option(..., "--model", help="ViLU model path (suffix optional)."),
    split: str = typer.Option("test", "--split", help="Items to evaluate on ('all' for every "
                              "split)."),
    domain: list[str] = typer.Option(None, "--domain", help="Restrict to these domains "
                                     "(repeatable)."),
    posterior: Path = typer.Option(None, "--posterior", help="BayesVLM posterior folder: adds "
                                   "its predictive-variance baseline."),
    out: Path = typer.Option(None, "--out", help="Folder for failure_eval.parquet and "
                             "risk_coverage.png (default: MODEL-eval)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Compare ViLU with MSP, entropy, DOCTOR (and BayesVLM variance): table and plot."""
    from activevlm.bayes.posterior import BayesVLMPosterior
    from activevlm.vilu import ViLUModel, evaluate_on_pool

    p = open_pool_or_demo(pool)
    vilu = ViLUModel.load(model, expected_model_id=p.model_id)
    post = None if posterior is None else BayesVLMPosterior.load(posterior)
    out = out or model.with_name(f"{model.with_suffix('').name}-eval")
    table = evaluate_on_pool(vilu, p, split=_split(split), domain=domain or None,
                             posterior=post, out=out, device=device)
    first = table.iloc[0]
    shown = Table(title=f"Failure prediction: {int(first['n'])} items, "
                        f"{int(first['failures'])} failures (accuracy {first['accuracy']:.3f})")
    for col, label in [("method", "method"), ("auroc", "AUROC ↑"),
                       ("fpr_at_95tpr", "FPR@95TPR ↓"), ("aupr_error", "AUPR-Error ↑"),
                       ("aurc", "AURC ↓")]:
        shown.add_column(label, justify="left" if col == "method" else "right")
    for _, row in table.iterrows():
        shown.add_row(row["method"], *(f"{row[c]:.4f}" for c in
                                       ("auroc", "fpr_at_95tpr", "aupr_error", "aurc")))
    console.print(shown)
    console.print(f"saved {out / 'failure_eval.parquet'} and {out / 'risk_coverage.png'}")
