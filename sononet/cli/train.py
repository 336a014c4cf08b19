"""``sononet train-all`` (the whole experiment) and ``sononet train`` (one model, DDP under torchrun)."""

from __future__ import annotations

from pathlib import Path

import click

from sononet.cli.options import (
    MODELS,
    RegistryChoice,
    RegistryList,
    device_option,
    given,
    perturb_options,
    robustness_config,
)
from sononet.train.profiles import PROFILE_CHOICES, W2V2_CHOICES


def _split_option(ctx: click.Context | None, param: click.Parameter | None, value: str | None):
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


def experiment_options(*skip: str):
    """train-all's options, less those named in ``skip`` (``nested`` has no use for some).
    Unset ones fall through to the config dataclasses (and the profile)."""
    opts = [
        click.option("--data", type=click.Path(exists=True), default=None,
                     help="Corpus: CREMA-D or RAVDESS folder, manifest CSV/Parquet, audiofolder [default: demo]."),
        click.option("--out", type=click.Path(), default=None, help="Run folder [default: runs/demo or runs/<data>]."),
        click.option("--models", type=RegistryList(MODELS), default=None, help="Comma-separated [default: all]."),
        click.option("--labels", default=None, help="Keep only these classes, e.g. ANG,DIS,FEA,HAP,NEU,SAD."),
        click.option("--label-map", default=None, help="Relabel first: CAL=NEU,SUR=HAP or a JSON/TOML/text file."),
        click.option("--trim-silence-db", type=float, default=None,
                     help="Trim leading/trailing audio this many dB below the clip's peak (librosa.effects.trim)."),
        click.option("--profile", type=click.Choice(PROFILE_CHOICES), default=None,
                     help="demo: short CPU settings; real: the RAVDESS-tuned recipe [default: auto: demo for the "
                     "generated demo corpus, real for any other]."),
        click.option("--w2v2", default=None, help=f"{W2V2_CHOICES} [default: auto: tiny on CPU, base on CUDA]."),
        click.option("--epochs", type=int, default=None,
                     help="Max epochs, every model [default: the profile's: demo 6 (its tiny wav2vec2 2), real 60]."),
        click.option("--batch-size", type=int, default=None, help="Clips per training step [default: 32]."),
        click.option("--folds", type=int, default=None, help="Speaker-grouped k-fold CV (>= 3) [default: 1 split]."),
        click.option("--split", default=None, callback=_split_option, metavar="speaker|random|emobox:DIR",
                     help="random is speaker-dependent (leaky) and says so in every table; emobox:DIR takes the "
                     "folds of an EmoBox meta dir (data/<corpus>) [default: speaker]."),
        click.option("--seed", type=int, default=None, help="Split and training seed [default: 0]."),
        device_option,
        click.option("--jobs", type=int, default=None,
                     help="Models (fold x model) trained at once, one process each [default: on the CPU one per "
                     "--threads, each single-threaded; on a GPU 1]."),
        click.option("--fresh", is_flag=True, help="Ignore checkpoints in --out and retrain every model."),
        click.option("--speaker-norm/--no-speaker-norm", default=None,
                     help="Log-mel minus each speaker's mean over its clips (no labels used) [default: on]."),
        click.option("--refit/--no-refit", default=None,
                     help="After choosing the epoch count on the validation speakers, train each model again on "
                     "training + validation speakers for that many epochs; the test split scores the refit "
                     "(<fold>/<model>/refit/model) [default: the profile's: real on, demo off]."),
        click.option("--class-weights", is_flag=True, default=None, help="Inverse-frequency class weights."),
        click.option("--intensity-aux", is_flag=True, default=None,
                     help="Auxiliary intensity head: CREMA-D LO/MD/HI, RAVDESS normal/strong as MD/HI."),
        click.option("--mixup", "mixup_alpha", type=float, default=None,
                     help="Mixup: mix each batch with a shuffled copy, weight ~ Beta(a, a); 0 = off [default: 0]."),
        click.option("--vtlp", type=float, default=None,
                     help="Log-mel models: warp each training clip's frequency axis by a factor in [1 - v, 1 + v], "
                     "as if spoken by a longer or shorter vocal tract (0.1 = up to 10 %); 0 = off."),
        click.option("--noise-p", type=click.FloatRange(0, 1), default=None, metavar="P",
                     help="Log-mel models: the share of training clips heard in noise (a random colour, white to "
                     "brown, at 0-30 dB SNR; docs/robustness.md): far better under noise, a few points lower "
                     "on clean audio; 0 = off [default: 0]."),
        click.option("--speed-perturb", is_flag=True, default=None, help="wav2vec2: 0.9/1.0/1.1 speed perturbation."),
        click.option("--tempo-perturb", is_flag=True, default=None, help="wav2vec2: 0.9/1.0/1.1 time stretch."),
        click.option("--pitch-perturb", is_flag=True, default=None, help="wav2vec2: pitch x0.9/1.0/1.1."),
        click.option("--tensorboard/--no-tensorboard", default=None, help="Curves in <out>/<model>/tb [default: on]."),
        perturb_options,
        click.option("--print-spec", is_flag=True, help="Print the resolved spec (what would run) and exit."),
    ]  # fmt: skip

    def decorate(f):
        for opt in reversed(opts):
            probe = opt(lambda: None)  # the option's parameter names, to honour `skip`
            if not any(p.name in skip for p in probe.__click_params__):
                f = opt(f)
        return f

    return decorate


@click.command("train-all")
@experiment_options()
def train_all_command(print_spec: bool, **kw) -> None:
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

    cfg = experiment_config(**kw)
    if print_spec:
        click.echo(spec_text(resolve_experiment(cfg), "train-all"), nl=False)
        return
    result = run_experiment(cfg)
    click.echo(f"done in {result['seconds']:.0f} s: {Path(cfg.out) / 'report.md'}")


def experiment_config(**kw):
    """Map CLI options onto ExperimentConfig; options left unset keep the dataclass defaults."""
    from sononet.corpus import parse_label_map
    from sononet.experiment import ExperimentConfig

    data = kw.get("data")
    out = kw.get("out") or ("runs/demo" if data is None else f"runs/{Path(data).resolve().name.lower()}")
    models = kw.get("models")
    if isinstance(models, str):  # called from Python rather than through click
        models = tuple(m.strip() for m in models.split(",") if m.strip())
    base = ExperimentConfig(out=out)
    labels = tuple(x.strip() for x in kw["labels"].split(",") if x.strip()) if kw.get("labels") else None
    features = given(base.prepare.features, trim_silence_db=kw.get("trim_silence_db"))
    prepare = given(
        base.prepare, data=data, labels=labels, features=features,
        label_map=parse_label_map(kw.get("label_map")) or None,
    )  # fmt: skip
    split_kw = kw.get("split")
    mode, emobox = _split_option(None, None, split_kw) if isinstance(split_kw, str) else split_kw or (None, None)
    split = given(base.split, mode=mode, emobox=emobox, folds=kw.get("folds"), seed=kw.get("seed"))
    augment = given(
        base.train.augment, speed_perturb=kw.get("speed_perturb"), tempo_perturb=kw.get("tempo_perturb"),
        pitch_perturb=kw.get("pitch_perturb"), mixup_alpha=kw.get("mixup_alpha"), vtlp=kw.get("vtlp"),
        noise_p=kw.get("noise_p"),
    )  # fmt: skip
    train = given(
        base.train, epochs=kw.get("epochs"), batch_size=kw.get("batch_size"), seed=kw.get("seed"),
        speaker_norm=kw.get("speaker_norm"), refit=kw.get("refit"), class_weights=kw.get("class_weights"),
        intensity_aux=kw.get("intensity_aux"), augment=augment,
        tensorboard=kw.get("tensorboard"),
    )  # fmt: skip
    robustness = robustness_config(base.robustness, kw.get("perturb"), kw.get("no_perturb"))
    return given(
        base, models=models or None, w2v2=kw.get("w2v2"), device=kw.get("device"), profile=kw.get("profile"),
        jobs=kw.get("jobs"), robustness=robustness,
        resume=False if kw.get("fresh") else None, prepare=prepare, split=split, train=train,
    )  # fmt: skip


@click.command("train")
@click.option("--shards", type=click.Path(exists=True), required=True, help="Shard folder from `sononet prepare`.")
@click.option("--model", "name", type=RegistryChoice(MODELS), required=True, help="The model to train.")
@click.option("--out", type=click.Path(), required=True, help="Model run folder (checkpoint, model/, history).")
@click.option("--epochs", type=int, default=None, help="Max epochs [default: the profile's, by the shards' corpus].")
@click.option("--batch-size", type=int, default=None, help="Per rank [default: 32].")
@click.option("--seed", type=int, default=None, help="Split and training seed [default: 0].")
@click.option("--profile", type=click.Choice(PROFILE_CHOICES), default=None,
              help="demo | real recipe [default: auto, by the shards' corpus].")  # fmt: skip
@click.option("--refit/--no-refit", default=None, help="Refit on train + val into OUT/refit [default: the profile's].")
@click.option("--w2v2", default=None, help=f"{W2V2_CHOICES} [default: auto: tiny on CPU, base on CUDA].")
@device_option
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoint/last.pt.")
@click.option("--print-spec", is_flag=True, help="Print the resolved spec (what would run) and exit.")
def train_command(print_spec: bool, **kw) -> None:
    """Train one model on a speaker-disjoint split of prepared shards; DDP under torchrun.

    \b
    sononet train --shards runs/demo/shards --model cnn --out runs/cnn
    torchrun --nproc-per-node 2 -m sononet train --shards runs/demo/shards --model cnn --out runs/ddp
    """
    from sononet.jobs import spec_text
    from sononet.training import resolve_training, run_training

    cfg = training_config(**kw)
    if print_spec:
        click.echo(spec_text(resolve_training(cfg), "train"), nl=False)
        return
    result = run_training(cfg)
    if result["is_main"]:
        click.echo(f"best epoch {result['best_epoch']}; model in {result['model_dir']}")


def training_config(**kw):
    """Map ``sononet train``'s options onto TrainingConfig; options left unset keep the dataclass defaults."""
    from sononet.training import TrainingConfig

    base = TrainingConfig(shards=kw["shards"], model_name=kw["name"], out=kw["out"])
    train = given(
        base.train, epochs=kw.get("epochs"), batch_size=kw.get("batch_size"), seed=kw.get("seed"), refit=kw.get("refit")
    )
    split = given(base.split, seed=kw.get("seed"))
    return given(
        base, w2v2=kw.get("w2v2"), device=kw.get("device"), profile=kw.get("profile"),
        resume=kw.get("resume") or None, split=split, train=train,
    )  # fmt: skip
