"""``activevlm embed``: run the encoders once over a dataset and write a feature pool."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # long paths stay copy-pastable


def embed(
    data: str = typer.Option(..., "--data", help="Dataset spec LAYOUT:PATH, e.g. "
                             "officehome:/data/OfficeHome or folder:/images, or a registered "
                             "name (demo)."),
    out: Path = typer.Option(..., "--out", help="Pool directory to write (or resume)."),
    model: str = typer.Option(None, "--model", help="open_clip model name, e.g. ViT-B-32 "
                              "(default: the stem of --model-config)."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip pretrained tag, e.g. "
                                   "laion2b_s34b_b79k."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Local state-dict file to load "
                                    "instead of a pretrained tag."),
    model_config: Path = typer.Option(None, "--model-config", help="Local open_clip JSON "
                                      "config to register first (its file stem is the name)."),
    templates: str = typer.Option("simple", "--templates", help="Prompt template set for the "
                                  "class text activations (simple, clip-imagenet, ...)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Image-loading processes."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:0."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 autocast on CUDA), "
                                  "fp32, amp, amp_bf16."),
    shard_size: int = typer.Option(8192, "--shard-size", min=1, help="Images per shard file "
                                   "(the unit of resume)."),
    ray: bool = typer.Option(False, "--ray", help="Embed the shards on Ray actors (a local "
                             "Ray unless --ray-address); same pool files."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Embed on the Ray "
                                           "cluster at HOST:PORT (or 'auto'); implies --ray. "
                                           "--out must be on a file system its nodes share."),
    ray_actors: int | None = typer.Option(None, "--ray-actors", min=1, help="Encoder copies "
                                          "(default: one per GPU, else per 1 + "
                                          "--num-workers CPUs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Embed every image of a dataset once; an interrupted run resumes when re-run."""
    from activevlm.data import load_dataset
    from activevlm.models import load_vlm, register_model_config
    from activevlm.pool import embed_dataset, embed_dataset_ray
    from activevlm.utils.ray_cluster import connect

    if model_config is not None:
        registered = register_model_config(model_config)
        model = model or registered
    if model is None:
        raise ValueError("pass --model NAME (or --model-config PATH)")
    on_ray = ray or ray_address is not None
    if on_ray:  # a missing package or a silent address fails before any work
        connect(ray_address, progress=progress)
    dataset = load_dataset(data)
    vlm = load_vlm(model, pretrained=pretrained, checkpoint=checkpoint, device=device,
                   precision=precision)
    console.print(f"model [bold]{vlm.model_id}[/] on {vlm.device} ({vlm.precision}); "
                  f"dataset {dataset.name}: {len(dataset)} images, "
                  f"{len(dataset.classnames)} classes")
    options = dict(batch_size=batch_size, num_workers=num_workers, shard_size=shard_size,
                   templates=templates, progress=progress)
    if on_ray:
        pool = embed_dataset_ray(dataset, vlm, out, address=ray_address, actors=ray_actors,
                                 **options)
    else:
        pool = embed_dataset(dataset, vlm, out, **options)
    counts, dims = pool.manifest["counts"], pool.manifest["dims"]
    arrays = ", ".join(pool.manifest["arrays"])
    console.print(
        f"[green]pool ready at {pool.path}[/]: {counts['items']} images embedded, "
        f"{counts['failures']} failed, {counts['shards']} shards ({arrays}); "
        f"{len(pool.classnames)} class prompt ensembles; dims image {dims['image_act']}, "
        f"text {dims['text_act']}, embed {dims['embed']}"
    )
    if counts["failures"]:
        console.print(f"unreadable images listed in {pool.path / 'failures.parquet'}")
