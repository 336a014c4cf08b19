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

import functools
import logging
import sys
from dataclasses import replace
from pathlib import Path

import click

from sononet.errors import USER_ERRORS
from sononet.errors import fail as _fail

log = logging.getLogger("sononet")


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


def _split_option(ctx, param, value: str | None) -> tuple[str, str | None] | None:
    """``speaker``, ``random`` or ``emobox:<meta dir>`` -> (mode, EmoBox dir)."""
    if value is None:
        return None
    if value in ("speaker", "random"):
        return value, None
    mode, sep, meta_dir = value.partition(":")
    if mode == "emobox" and sep and meta_dir:
        if not Path(meta_dir).is_dir():
            raise click.BadParameter(f"EmoBox meta dir does not exist: {meta_dir}")
        return "emobox", meta_dir
    raise click.BadParameter(
        f"expected speaker, random or emobox:<EmoBox meta dir, e.g. EmoBox/data/cremad>. Found: {value!r}"
    )


def _experiment_options(f):
    """train-all's options. Unset ones fall through to the config dataclasses (and the profile)."""
    opts = [
        click.option("--data", type=click.Path(exists=True), default=None,
                     help="Corpus: CREMA-D or RAVDESS folder, manifest CSV/Parquet, audiofolder [default: demo]."),
        click.option("--out", type=click.Path(), default=None, help="Run folder [default: runs/demo or runs/<data>]."),
        click.option("--models", default=None, help="Comma-separated: cnn, bigru, wav2vec2 [default: all three]."),
        click.option("--labels", default=None, help="Keep only these classes, e.g. ANG,DIS,FEA,HAP,NEU,SAD."),
        click.option("--label-map", default=None, help="Relabel first: CAL=NEU,SUR=HAP or a JSON/TOML/text file."),
        click.option("--trim-silence-db", type=float, default=None,
                     help="Trim leading/trailing audio this many dB below the clip's peak (librosa.effects.trim)."),
        click.option("--profile", type=click.Choice(["auto", "demo", "real"]), default=None,
                     help="demo: short CPU settings; real: the RAVDESS-tuned recipe [default: auto, by --data]."),
        click.option("--w2v2", default=None, help="tiny | hub id | dir [default: auto: tiny on CPU, base on CUDA]."),
        click.option("--epochs", type=int, default=None, help="Max epochs [default: the profile's: demo 6, real 60]."),
        click.option("--batch-size", type=int, default=None),
        click.option("--folds", type=int, default=None, help="Speaker-grouped k-fold CV (>= 3) [default: 1 split]."),
        click.option("--split", default=None, callback=_split_option, metavar="speaker|random|emobox:DIR",
                     help="random is speaker-dependent (leaky) and says so in every table; emobox:DIR takes the "
                     "folds of an EmoBox meta dir (data/<corpus>) [default: speaker]."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="auto | cpu | cuda | cuda:N."),
        click.option("--fresh", is_flag=True, help="Ignore checkpoints in --out and retrain every model."),
        click.option("--class-weights", is_flag=True, default=None, help="Inverse-frequency class weights."),
        click.option("--intensity-aux", is_flag=True, default=None, help="Auxiliary LO/MD/HI head where labels exist."),
        click.option("--speed-perturb", is_flag=True, default=None, help="wav2vec2: 0.9/1.0/1.1 speed perturbation."),
        click.option("--tempo-perturb", is_flag=True, default=None, help="wav2vec2: 0.9/1.0/1.1 time stretch."),
        click.option("--pitch-perturb", is_flag=True, default=None, help="wav2vec2: pitch x0.9/1.0/1.1."),
        click.option("--tensorboard/--no-tensorboard", default=None, help="Curves in <out>/<model>/tb [default: on]."),
        click.option("--print-spec", is_flag=True, help="Print the resolved spec (what would run) and exit."),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command("train-all")
@_experiment_options
def train_all(print_spec: bool, **kw) -> None:
    """Prepare (if needed), train the models, evaluate, ensemble and report.

    \b
    sononet train-all                                          # synthetic demo, CPU, ~5 min
    sononet train-all --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6
    sononet train-all --data data/cremad --w2v2 facebook/wav2vec2-base --device cuda
    sononet train-all --data my_manifest.csv --models cnn,bigru --folds 5
    sononet train-all --data data/cremad --print-spec          # what would run, as TOML
    """
    from sononet.experiment import resolve_experiment, run_experiment
    from sononet.jobs import spec_text

    try:
        cfg = experiment_config(**kw)
        if print_spec:
            click.echo(spec_text(resolve_experiment(cfg), "train-all"), nl=False)
            return
        result = run_experiment(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(f"done in {result['seconds']:.0f} s: {Path(cfg.out) / 'report.md'}")


def _set(obj, **values):
    """``dataclasses.replace`` with only the values the user gave (None = keep the default)."""
    given = {k: v for k, v in values.items() if v is not None}
    return replace(obj, **given) if given else obj


def experiment_config(**kw):
    """Map CLI options onto ExperimentConfig; options left unset keep the dataclass defaults."""
    from sononet.corpus import parse_label_map
    from sononet.experiment import ExperimentConfig

    data = kw.get("data")
    out = kw.get("out") or ("runs/demo" if data is None else f"runs/{Path(data).resolve().name.lower()}")
    models = tuple(m.strip() for m in kw["models"].split(",") if m.strip()) if kw.get("models") else None
    base = ExperimentConfig(out=out)
    labels = tuple(x.strip() for x in kw["labels"].split(",") if x.strip()) if kw.get("labels") else None
    features = _set(base.prepare.features, trim_silence_db=kw.get("trim_silence_db"))
    prepare = _set(
        base.prepare, data=data, labels=labels, features=features,
        label_map=parse_label_map(kw.get("label_map")) or None,
    )  # fmt: skip
    split_kw = kw.get("split")
    mode, emobox = _split_option(None, None, split_kw) if isinstance(split_kw, str) else split_kw or (None, None)
    split = _set(base.split, mode=mode, emobox=emobox, folds=kw.get("folds"), seed=kw.get("seed"))
    augment = _set(
        base.train.augment, speed_perturb=kw.get("speed_perturb"), tempo_perturb=kw.get("tempo_perturb"),
        pitch_perturb=kw.get("pitch_perturb"),
    )  # fmt: skip
    train = _set(
        base.train, epochs=kw.get("epochs"), batch_size=kw.get("batch_size"), seed=kw.get("seed"),
        class_weights=kw.get("class_weights"), intensity_aux=kw.get("intensity_aux"), augment=augment,
        tensorboard=kw.get("tensorboard"),
    )  # fmt: skip
    return _set(
        base, models=models, w2v2=kw.get("w2v2"), device=kw.get("device"), profile=kw.get("profile"),
        resume=False if kw.get("fresh") else None, prepare=prepare, split=split, train=train,
    )  # fmt: skip


@main.command()
@click.option("--shards", type=click.Path(exists=True), required=True, help="Shard folder from `sononet prepare`.")
@click.option("--model", "name", required=True, help="cnn | bigru | wav2vec2.")
@click.option("--out", type=click.Path(), required=True, help="Model run folder (checkpoint, model/, history).")
@click.option("--epochs", type=int, default=None, help="Max epochs [default: the profile's, by the shards' corpus].")
@click.option("--batch-size", type=int, default=None, help="Per rank [default: TrainConfig's].")
@click.option("--seed", type=int, default=0)
@click.option("--w2v2", default="tiny", help="tiny | hub id | local dir.")
@click.option("--device", default="auto")
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint/last.pt.")
def train(
    shards: str,
    name: str,
    out: str,
    epochs: int | None,
    batch_size: int | None,
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

    from sononet.corpus import corpus_label
    from sononet.corpus.splits import SplitConfig
    from sononet.device import resolve_device
    from sononet.experiment import shard_labels, shard_splits, w2v2_overrides
    from sononet.features.reader import load_metadata
    from sononet.features.shards import read_manifest
    from sononet.io import atomic_write_json
    from sononet.train import ddp
    from sononet.train.loop import PROFILE_EPOCHS, TrainConfig, train_model

    try:
        dev = resolve_device(device)
        info = ddp.init_from_env(dev)
        if info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
        manifest = read_manifest(shards)
        meta = load_metadata(shards, ["clip_id", "speaker", "sex", "label"]).to_pandas()
        splits = shard_splits(meta, SplitConfig(seed=seed))
        labels = shard_labels(manifest, meta)
        over, note = w2v2_overrides(w2v2)
        corpus = corpus_label(manifest, list(meta.clip_id))
        profile = "demo" if corpus.startswith("demo") else "real"
        cfg = _set(TrainConfig(), epochs=epochs or PROFILE_EPOCHS[profile], batch_size=batch_size, seed=seed)
        cfg.model_overrides = {"wav2vec2": over}
        protocol = {"corpus": corpus, "split": SplitConfig().protocol, "folds": 1, "seed": seed}
        protocol["pretrained"] = {"wav2vec2": note} if name == "wav2vec2" else {}
        train_meta = {"feature_config": manifest["feature_config"], "protocol": protocol}
        result = train_model(name, shards, splits, labels, cfg, out, dev, resume=resume, dist=info, meta=train_meta)
        if info.is_main:
            done = {"best_epoch": result.best_epoch, "epochs": len(result.history), "world_size": info.world_size}
            atomic_write_json(Path(out) / "done.json", {**done, "digests": result.digests})
            click.echo(f"best epoch {result.best_epoch}; model in {result.model_dir}")
        ddp.shutdown(info)
    except USER_ERRORS as e:
        _fail(e)


@main.command("evaluate")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="Saved model folder, e.g. runs/ravdess/cnn/model.",
)
@click.option("--data", type=click.Path(exists=True), required=True, help="Test corpus (any kind --data takes).")
@click.option("--out", type=click.Path(), required=True, help="Report folder (shards go to OUT/shards).")
@click.option("--label-map", default=None, help="Relabel the test corpus first, e.g. CAL=NEU,SUR=HAP.")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
def evaluate(model_dir: str, data: str, out: str, label_map: str | None, device: str) -> None:
    """Cross-corpus evaluation: a trained model on every clip of another corpus.

    Scores the classes both corpora share (after --label-map) and writes the same
    predictions, metrics, tables, plots and report as train-all, labelled
    "cross-corpus: trained on X, tested on Y".

    \b
    sononet evaluate --model runs/ravdess/cnn/model --data runs/demo/demo-corpus --out runs/ravdess-on-demo
    sononet evaluate --model runs/demo/cnn/model --data ../shared/data/ravdess --out runs/demo-on-ravdess
    """
    from sononet.corpus import parse_label_map
    from sononet.evaluate.cross_corpus import CrossCorpusConfig, evaluate_cross_corpus, headline

    try:
        cfg = CrossCorpusConfig(
            model=model_dir, data=data, out=out, label_map=parse_label_map(label_map), device=device
        )
        result = evaluate_cross_corpus(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(headline(result))
    click.echo(f"report: {Path(out) / 'report.md'}")


def with_threads(cmd: click.Command) -> click.Command:
    """Give ``cmd`` a ``--threads`` option that sizes the CPU thread pools before any heavy import."""
    cmd.params.append(
        click.Option(
            ["--threads"], type=int, default=None,
            help="CPU threads for torch and numba [default: $SONONET_THREADS, else the CPUs this process may use].",
        )
    )  # fmt: skip
    callback = cmd.callback

    @functools.wraps(callback)
    def run(*args, threads: int | None = None, **kwargs):
        from sononet.device import configure_threads

        try:
            configure_threads(threads)
        except ValueError as e:
            _fail(e)
        return callback(*args, **kwargs)

    cmd.callback = run
    return cmd


def _register() -> None:
    """Commands that live beside their stage; their modules keep heavy imports inside the command."""
    from sononet.bench import bench_command
    from sononet.export import export_command
    from sononet.label import label_command

    main.add_command(with_threads(label_command))
    main.add_command(bench_command)  # has its own --threads: it measures thread counts
    main.add_command(export_command)
    for name in ("prepare", "train-all", "train", "evaluate"):
        with_threads(main.commands[name])


_register()

if __name__ == "__main__":
    main()
