"""Augmentation: each wave perturbation does what its name says; eval mode is the identity."""

from __future__ import annotations

import pytest
import torch

from sononet.train.augment import AugmentConfig, MelAugment, WaveAugment, mixup

SR = 16_000


def peak_hz(x: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(x[: SR // 2]).abs()  # 0.5 s -> 2 Hz bins
    return float(spectrum.argmax()) * 2.0


@pytest.fixture
def tone() -> torch.Tensor:
    return torch.sin(2 * torch.pi * 200 * torch.arange(48_000) / SR).repeat(2, 1)


@pytest.mark.parametrize(
    ("option", "want_hz", "want_len"),
    [("speed_perturb", 220.0, 27_272), ("tempo_perturb", 200.0, 27_272), ("pitch_perturb", 220.0, 30_000)],
)
def test_wave_perturbations(tone: torch.Tensor, option: str, want_hz: float, want_len: int) -> None:
    aug = WaveAugment(AugmentConfig(noise_std=0.0, **{option: True})).train()
    aug.factors = (1.1,)  # force the factor under test
    y, lengths = aug(tone, torch.full((2,), 30_000))
    assert y.shape == tone.shape
    assert abs(peak_hz(y[0]) - want_hz) <= 4.0, f"{option}: peak at {peak_hz(y[0])} Hz"
    assert abs(int(lengths[0]) - want_len) <= 2


def test_eval_mode_is_identity(tone: torch.Tensor) -> None:
    cfg = AugmentConfig(speed_perturb=True, tempo_perturb=True, pitch_perturb=True)
    y, lengths = WaveAugment(cfg).eval()(tone, torch.full((2,), 48_000))
    assert torch.equal(y, tone) and lengths.tolist() == [48_000, 48_000]
    mel = torch.randn(2, 128, 94)
    assert torch.equal(MelAugment(AugmentConfig()).eval()(mel), mel)


def test_spec_augment_masks_in_training() -> None:
    torch.manual_seed(0)
    mel = torch.ones(4, 128, 94)
    out = MelAugment(AugmentConfig(noise_std=0.0)).train()(mel)
    assert (out == 0).any() and out.shape == mel.shape


def test_mixup_is_a_convex_mix_with_a_partner_and_keeps_the_longer_length() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4, 10)
    lengths = torch.arange(3, 11)
    mixed, mixed_len, perm, lam = mixup(x, lengths, alpha=0.4)
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(8))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    assert torch.equal(mixed_len, torch.maximum(lengths, lengths[perm]))


def test_mixup_cannot_be_combined_with_the_intensity_head() -> None:
    from sononet.train.loop import TrainConfig

    with pytest.raises(ValueError, match="mixup"):
        TrainConfig(intensity_aux=True, augment=AugmentConfig(mixup_alpha=0.2))
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        AugmentConfig(mixup_alpha=-1.0)
