"""The ``sononet`` command line: thin click shims over the library stages.

Examples::

    sononet train-all                                   # demo corpus, CPU, ~5 min
    sononet download --to data/cremad                   # real CREMA-D (605 MB, sha256-verified)
    sononet train-all --data data/cremad --out runs/cremad
    sononet prepare --data data/cremad --out runs/cremad/shards
    torchrun --nproc-per-node 2 -m sononet train --shards runs/demo/shards --model cnn --out runs/ddp
    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet bench --out results/bench

Heavy imports (torch, transformers) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import click

log = logging.getLogger("sononet")

USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, KeyError)


def _fail(e: BaseException) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


class _Main(click.Group):
    """The root group: a full disk anywhere below is one line and exit 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from sononet.errors import DiskFullError, is_disk_full

        try:
            return super().invoke(ctx)
        except OSError as e:
            if not is_disk_full(e):
                raise
            click.echo(f"error: {e if isinstance(e, DiskFullError) else DiskFullError(e.filename or '?')}", err=True)
            sys.exit(1)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="sononet")
def main(verbose: bool) -> None:
    """SonoNet: speech emotion recognition as a batch job (CREMA-D -> log-mel shards -> CNN, BiGRU, wav2vec2)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _prepare_options(f):
    for opt in reversed(
        [
            click.option("--shard-size", type=int, default=256, help="Clips per Parquet shard (bounds memory)."),
            click.option("--workers", type=int, default=2, help="Decode threads."),
            click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N."),
            click.option(
                "--mel-backend",
                type=click.Choice(["auto", "nnaudio", "torchaudio"]),
                default="auto",
                help="auto times both on the device and keeps the faster.",
            ),
        ]
    ):
        f = opt(f)
    return f


@main.command()
@click.option("--data", type=click.Path(exists=True), help="CREMA-D folder, manifest CSV/Parquet or audiofolder.")
@click.option("--demo", is_flag=True, help="Use the generated synthetic demo corpus (no download).")
@click.option("--out", type=click.Path(), required=True, help="Shard folder; a rerun resumes here.")
@_prepare_options
def prepare(
    data: str | None, demo: bool, out: str, shard_size: int, workers: int, device: str, mel_backend: str
) -> None:
    """Decode, pad/trim and log-mel a corpus into Parquet shards.

    \b
    sononet prepare --demo --out runs/demo/shards
    sononet prepare --data data/cremad --out runs/cremad/shards --device cuda
    """
    from sononet.prepare import PrepareConfig, format_summary
    from sononet.prepare import prepare as run

    if bool(data) == demo:
        _fail(ValueError("pass exactly one of --data PATH or --demo"))
    try:
        cfg = PrepareConfig(
            data=data, out=out, shard_size=shard_size, workers=workers, device=device, mel_backend=mel_backend
        )
        summary = run(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(format_summary(summary))
    click.echo(f"summary: {Path(out) / 'summary.json'}")


@main.command()
@click.option("--to", "to", type=click.Path(), required=True, help="Folder for the 7,442 WAV files.")
@click.option("--jobs", type=int, default=8, help="Parallel downloads.")
@click.option("--base-url", default=None, help="Mirror URL ending in AudioWAV/ (default: the official LFS media URL).")
@click.option("--limit", type=int, default=None, help="Fetch only the first N files (for a quick check).")
@click.option(
    "--timeout", type=float, default=120.0, help="Seconds one attempt at one file may take in all; then it resumes."
)
def download(to: str, jobs: int, base_url: str | None, limit: int | None, timeout: float) -> None:
    """Download CREMA-D's audio, verified by size and sha256; resumable.

    \b
    sononet download --to data/cremad
    sononet download --to data/cremad --base-url https://my-mirror/crema-d/AudioWAV/
    """
    from sononet.corpus import download as dl

    try:
        config = dl.DownloadConfig(file_timeout_s=timeout)
        summary = dl.download_cremad(to, jobs=jobs, base_url=base_url, files=limit, config=config)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(summary.format())
    if not summary.ok:
        sys.exit(1)


def _experiment_options(f):
    opts = [
        click.option("--data", type=click.Path(exists=True), default=None, help="Corpus; default: the demo corpus."),
        click.option(
            "--out",
            type=click.Path(),
            default=None,
            help="Run directory [default: runs/demo or runs/<data>].",
        ),
        click.option("--models", default="cnn,bigru,wav2vec2", help="Comma-separated model names."),
        click.option(
            "--w2v2",
            default="auto",
            help="tiny | hub id | local dir; auto: tiny on CPU, wav2vec2-base on CUDA.",
        ),
        click.option("--epochs", type=int, default=None, help="Max epochs [default: 6 on CPU, 40 on CUDA]."),
        click.option("--batch-size", type=int, default=32),
        click.option("--folds", type=int, default=1, help="Speaker-grouped k-fold CV (>= 3); 1 = one split."),
        click.option(
            "--split",
            type=click.Choice(["speaker", "random"]),
            default="speaker",
            help="random is speaker-dependent (leaky) and says so in every table.",
        ),  # fmt: skip
        click.option("--seed", type=int, default=0),
        click.option("--device", default="auto"),
        click.option("--fresh", is_flag=True, help="Ignore checkpoints in --out and retrain every model."),
        click.option("--class-weights", is_flag=True, help="Inverse-frequency class weights."),
        click.option("--intensity-aux", is_flag=True, help="Auxiliary LO/MD/HI head where labels exist."),
        click.option("--speed-perturb", is_flag=True, help="wav2vec2: 0.9/1.0/1.1 speed perturbation."),
        click.option("--tempo-perturb", is_flag=True, help="wav2vec2: 0.9/1.0/1.1 time stretch, pitch kept."),
        click.option("--pitch-perturb", is_flag=True, help="wav2vec2: pitch x0.9/1.0/1.1, duration kept."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command("train-all")
@_experiment_options
def train_all(**kw) -> None:
    """Prepare (if needed), train the models, evaluate, ensemble and report.

    \b
    sononet train-all                                          # synthetic demo, CPU
    sononet train-all --data data/cremad --w2v2 facebook/wav2vec2-base
    sononet train-all --data my_manifest.csv --models cnn,bigru --folds 5
    """
    from sononet.experiment import run_experiment

    try:
        cfg = experiment_config(**kw)
        result = run_experiment(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(f"done in {result['seconds']:.0f} s: {Path(cfg.out) / 'report.md'}")


def experiment_config(**kw):
    """Map CLI options onto ExperimentConfig (shared by train-all and sononet-batch)."""
    import torch

    from sononet.corpus.splits import SplitConfig
    from sononet.experiment import ExperimentConfig
    from sononet.prepare import PrepareConfig
    from sononet.train.augment import AugmentConfig
    from sononet.train.loop import TrainConfig

    data = kw["data"]
    out = kw["out"] or ("runs/demo" if data is None else f"runs/{Path(data).resolve().name.lower()}")
    on_cuda = kw["device"].startswith("cuda") or (kw["device"] == "auto" and torch.cuda.is_available())
    epochs = kw["epochs"] if kw["epochs"] is not None else (40 if on_cuda else 6)  # 0 is refused, not defaulted
    models = tuple(m.strip() for m in kw["models"].split(",") if m.strip())
    return ExperimentConfig(
        out=out,
        models=models,
        w2v2=kw["w2v2"],
        device=kw["device"],
        resume=not kw["fresh"],
        prepare=PrepareConfig(data=data, out=str(Path(out) / "shards"), device=kw["device"]),
        split=SplitConfig(mode=kw["split"], folds=kw["folds"], seed=kw["seed"]),
        train=TrainConfig(
            epochs=epochs,
            batch_size=kw["batch_size"],
            seed=kw["seed"],
            class_weights=kw["class_weights"],
            intensity_aux=kw["intensity_aux"],
            augment=replace(
                AugmentConfig(),
                speed_perturb=kw["speed_perturb"],
                tempo_perturb=kw["tempo_perturb"],
                pitch_perturb=kw["pitch_perturb"],
            ),
        ),
    )


@main.command()
@click.option("--shards", type=click.Path(exists=True), required=True, help="Shard folder from `sononet prepare`.")
@click.option("--model", "name", required=True, help="cnn | bigru | wav2vec2.")
@click.option("--out", type=click.Path(), required=True, help="Model run folder (checkpoint, model/, history).")
@click.option("--epochs", type=int, default=12)
@click.option("--batch-size", type=int, default=32)
@click.option("--seed", type=int, default=0)
@click.option("--w2v2", default="tiny", help="tiny | hub id | local dir.")
@click.option("--device", default="auto")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint/last.pt.")
def train(
    shards: str,
    name: str,
    out: str,
    epochs: int,
    batch_size: int,
    seed: int,
    w2v2: str,
    device: str,
    resume: bool,
) -> None:
    """Train one model on a speaker-disjoint split of prepared shards; DDP under torchrun.

    \b
    sononet train --shards runs/demo/shards --model cnn --out runs/cnn
    torchrun --nproc-per-node 2 -m sononet train --shards runs/demo/shards --model cnn --out runs/ddp
    """
    import torch

    from sononet.corpus.splits import SplitConfig
    from sononet.experiment import shard_labels, shard_splits, w2v2_overrides
    from sononet.features.reader import load_metadata
    from sononet.features.shards import atomic_write_json, read_manifest
    from sononet.prepare import resolve_device
    from sononet.train import ddp
    from sononet.train.loop import TrainConfig, train_model

    try:
        dev = resolve_device(device)
        info = ddp.init_from_env(dev)
        if info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
        manifest = read_manifest(shards)
        meta = load_metadata(shards, ["clip_id", "speaker", "sex", "label"]).to_pandas()
        splits = shard_splits(meta, SplitConfig(seed=seed))
        labels = shard_labels(manifest, meta)
        over, _ = w2v2_overrides(w2v2, dev)
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, model_overrides={"wav2vec2": over})
        result = train_model(name, shards, splits, labels, cfg, out, dev, resume=resume, dist=info)
        if info.is_main:
            atomic_write_json(Path(out) / "ddp_check.json", {"world_size": info.world_size, "digests": result.digests})
            click.echo(f"best epoch {result.best_epoch}; model in {result.model_dir}")
        ddp.shutdown(info)
    except USER_ERRORS as e:
        _fail(e)


def _register() -> None:
    """Commands that live beside their stage; their modules keep heavy imports inside the command."""
    from sononet.bench import bench_command
    from sononet.label import label_command

    main.add_command(label_command)
    main.add_command(bench_command)


_register()

if __name__ == "__main__":
    main()
