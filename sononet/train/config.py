"""How one model trains: the knobs of the training loop, each default with why."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sononet.train.augment import AugmentConfig

SELECT_ON = ("val_ua", "val_loss")


@dataclass
class TrainConfig:
    epochs: int | None = None  # upper bound; None: the profile's (train/profiles.py)
    min_epochs: int = 15  # early stopping waits at least this long: the first epochs' scores are noise
    batch_size: int = 32  # fits wav2vec2-base on a 16 GB GPU at 3 s clips
    lr: float | None = None  # None: the model's own rate (its config's ``lr``)
    weight_decay: float = 1e-2
    grad_clip: float = 5.0  # GRUs and transformers occasionally spike early on
    warmup_epochs: int = 2  # linear learning-rate warm-up, in epochs: AdamW's first steps are the wildest
    select_on: str = "val_ua"  # val_ua | val_loss: keeps the best model and drives the plateau and stopping
    patience: int = 10  # epochs without a better validation score before stopping
    plateau_patience: int = 4  # epochs before ReduceLROnPlateau halves the learning rate
    plateau_factor: float = 0.5
    bn_recalibrate: bool = True  # recompute BatchNorm statistics on the training clips after each epoch
    # After selection, train again on the training and validation clips for the selected epochs;
    # the test split scores that model. None: the profile's (on for real speech, off for the demo).
    refit: bool | None = None
    # The refit's epoch count: the centre of the `refit_window` consecutive epochs with the best mean
    # validation score; 1 = the best epoch. One epoch's UA on 4 voices is noisy (results/ravdess, seventh round).
    refit_window: int = 5
    ema_epochs: float = 0.0  # > 0: validate and keep a moving average of the weights over about this many epochs
    # log-mel: remove each clip's level (one dB offset: the dB of its mean mel power) first, so gain
    # changes nothing; nested on RAVDESS validation actors it cost nothing on clean audio (docs/robustness.md)
    level_norm: bool = True
    speaker_norm: bool = True  # log-mel: remove each speaker's per-band mean first (features/normalize.py)
    # With speaker_norm: the share of training clips that lose the training speakers' average instead
    # of their own speaker's mean, as clips of unknown speakers do in `label`, so the model learns both.
    speaker_default_p: float = 0.5
    clip_norm: bool = False  # log-mel: remove each clip's own per-band mean before the global standardisation
    class_weights: bool = False  # inverse-frequency CE weights (CREMA-D's NEU is 15 % rarer)
    intensity_aux: bool = False  # auxiliary LO/MD/HI head where intensity labels exist (RAVDESS: normal/strong)
    aux_weight: float = 0.3
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    seed: int = 0
    window_shards: int = 4  # shards shuffled together; bounds memory
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tensorboard: bool = True  # curves in <out>/tb for `tensorboard --logdir runs` (needs the tensorboard extra)
    # Per model: its config's fields, an `augment` table (AugmentConfig fields) and `epochs` for it
    # alone, e.g. {"wav2vec2": {"tiny": True, "epochs": 2}, "bigru": {"augment": {"vtlp": 0.1}}}
    model_overrides: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"train.epochs must be at least 1 (or unset for the profile's). Found: {self.epochs}")
        for name in ("batch_size", "window_shards", "refit_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1. Found: {getattr(self, name)}")
        for name in ("min_epochs", "warmup_epochs", "patience", "plateau_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0. Found: {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"train.lr must be positive (or unset for the model's own). Found: {self.lr}")
        if not self.grad_clip > 0:  # `not >` also refuses NaN
            raise ValueError(f"train.grad_clip must be positive. Found: {self.grad_clip}")
        for name in ("weight_decay", "aux_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name} must be >= 0. Found: {getattr(self, name)}")
        for name in ("", *self.model_overrides):  # the run's augmentation, then each model's own
            self.augment_for(name)
        for name, own in self.model_overrides.items():
            epochs = own.get("epochs")
            if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
                raise ValueError(f"train.model_overrides.{name}.epochs must be a positive integer. Found: {epochs!r}")
        if self.speaker_norm and self.clip_norm:
            raise ValueError(
                "train.speaker_norm and train.clip_norm cannot be combined: the clip's own mean would replace "
                "its speaker's; set one of them to false"
            )
        if self.select_on not in SELECT_ON:
            raise ValueError(f"train.select_on must be one of {SELECT_ON}. Found: {self.select_on!r}")
        if not 0 <= self.speaker_default_p <= 1:  # also refuses NaN
            raise ValueError(f"train.speaker_default_p must be in [0, 1]. Found: {self.speaker_default_p}")
        if not self.ema_epochs >= 0:  # also refuses NaN
            raise ValueError(f"train.ema_epochs must be >= 0 (0 turns it off). Found: {self.ema_epochs}")
        if not 0 < self.plateau_factor < 1:  # also refuses NaN
            raise ValueError(f"train.plateau_factor must be in (0, 1). Found: {self.plateau_factor}")

    def epochs_for(self, name: str) -> int | None:
        """Max epochs for ``name``: its ``model_overrides`` entry, else ``epochs``."""
        return self.model_overrides.get(name, {}).get("epochs", self.epochs)

    def augment_for(self, name: str) -> AugmentConfig:
        """The augmentation model ``name`` trains with: ``augment`` and its own
        ``model_overrides[name]["augment"]`` on top (checked)."""
        changes = self.model_overrides.get(name, {}).get("augment", {})
        where = f"train.model_overrides.{name}.augment" if "mixup_alpha" in changes else "train.augment"
        try:
            augment = replace(self.augment, **changes)
        except TypeError as e:
            fields = ", ".join(AugmentConfig.__dataclass_fields__)
            raise ValueError(f"train.model_overrides.{name}.augment takes {fields}. Found: {sorted(changes)}") from e
        if augment.mixup_alpha > 0 and self.intensity_aux:
            raise ValueError(
                f"{where}.mixup_alpha and train.intensity_aux cannot be combined: mixup has no intensity target"
            )
        return augment


def selection_score(row: dict, select_on: str) -> float:
    """An epoch's score under ``select_on``: higher is better, whichever criterion is chosen."""
    return row["val_ua"] if select_on == "val_ua" else -row["val_loss"]
