"""Augmentation: each wave perturbation does what its name says; eval mode is the identity."""

from __future__ import annotations

import pytest
import torch

from sononet.train.augment import AugmentConfig, MelAugment, WaveAugment, mixup, vtlp_warp

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
    aug = WaveAugment(AugmentConfig(noise_std=0.0, **{option: True}), SR).train()
    aug.factors = (1.1,)  # force the factor under test
    y, lengths = aug(tone, torch.full((2,), 30_000))
    assert y.shape == tone.shape
    assert abs(peak_hz(y[0]) - want_hz) <= 4.0, f"{option}: peak at {peak_hz(y[0])} Hz"
    assert abs(int(lengths[0]) - want_len) <= 2


def test_eval_mode_is_identity(tone: torch.Tensor) -> None:
    cfg = AugmentConfig(speed_perturb=True, tempo_perturb=True, pitch_perturb=True)
    y, lengths = WaveAugment(cfg, SR).eval()(tone, torch.full((2,), 48_000))
    assert torch.equal(y, tone) and lengths.tolist() == [48_000, 48_000]
    mel = torch.randn(2, 128, 94)
    assert torch.equal(MelAugment(AugmentConfig(), SR).eval()(mel), mel)


def test_spec_augment_masks_in_training() -> None:
    torch.manual_seed(0)
    mel = torch.ones(4, 128, 94)
    out = MelAugment(AugmentConfig(noise_std=0.0), SR).train()(mel)
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
    from sononet.train.config import TrainConfig

    with pytest.raises(ValueError, match="mixup"):
        TrainConfig(intensity_aux=True, augment=AugmentConfig(mixup_alpha=0.2))
    own = {"bigru": {"augment": {"mixup_alpha": 0.2}}}  # a model's own mixup: refused when the config is made
    with pytest.raises(ValueError, match=r"model_overrides\.bigru\.augment\.mixup_alpha and train\.intensity_aux"):
        TrainConfig(intensity_aux=True, model_overrides=own)
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        AugmentConfig(mixup_alpha=-1.0)


def _tone_mel(hz: float) -> torch.Tensor:
    from sononet.features.mel import FeatureConfig, LogMel

    t = torch.arange(48_000) / SR
    return LogMel(FeatureConfig())(torch.sin(2 * torch.pi * hz * t)[None])  # (1, 128, 94)


@pytest.mark.parametrize(("hz", "alpha"), [(1000.0, 1.1), (2000.0, 0.9), (400.0, 1.1)])
def test_vtlp_moves_a_tone_where_a_real_tone_of_alpha_times_the_frequency_is(hz: float, alpha: float) -> None:
    warped = vtlp_warp(_tone_mel(hz), torch.tensor([alpha]), 0.0, 8000.0)
    real = _tone_mel(hz * alpha)
    band = lambda m: int(m[0, :, 40].argmax())  # noqa: E731 - the peak band of a middle frame
    assert band(warped) == band(real) != band(_tone_mel(hz))


def test_vtlp_identity_at_one_and_in_eval_and_bounded() -> None:
    mel = torch.randn(3, 128, 94)
    torch.testing.assert_close(vtlp_warp(mel, torch.ones(3), 0.0, 8000.0), mel)
    aug = MelAugment(AugmentConfig(vtlp=0.1, spec_augment=False, noise_std=0.0), SR)
    assert torch.equal(aug.eval()(mel), mel)
    out = aug.train()(mel)
    assert out.shape == mel.shape and not torch.equal(out, mel)
    assert out.min() >= mel.min() and out.max() <= mel.max()  # interpolation: no new extremes
    with pytest.raises(ValueError, match="vtlp must be in"):
        AugmentConfig(vtlp=0.7)


def _stored(waves: torch.Tensor) -> torch.Tensor:
    """Log-mel as prepare stores it (float16), of (B, S) waveforms."""
    from sononet.features.mel import FeatureConfig, LogMel

    return LogMel(FeatureConfig()).eval()(waves).to(torch.float16).float()


def test_noisy_mel_is_the_log_mel_of_the_noisy_waveform() -> None:
    from sononet.features.mel import FeatureConfig
    from sononet.train.augment import NoisyMel

    t = torch.arange(48_000) / SR
    waves = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (150.0, 300.0, 600.0)])  # (3, S)
    n = torch.tensor([48_000, 30_000, 20_000])
    waves = waves * (torch.arange(48_000)[None, :] < n[:, None])  # zero padding after each clip
    waves[2] = 0.0  # a silent clip: no level to set noise against, so never noised
    x = _stored(waves)
    cfg = AugmentConfig(noise_p=1.0, noise_snr=(10.0, 10.0))
    aug = NoisyMel(cfg, FeatureConfig())
    assert torch.equal(aug.eval()(x, waves, n), x)  # identity in eval mode
    torch.manual_seed(1)
    y = aug.train()(x, waves, n)
    assert torch.equal(y[2], x[2])
    frames_1 = 1 + 30_000 // 512
    assert not torch.allclose(y[:2, :, :frames_1], x[:2, :, :frames_1], atol=1.0)  # 10 dB SNR changes the clip
    torch.manual_seed(1)
    y2 = aug.train()(x, waves, n)
    assert torch.equal(y, y2)  # the same draws from torch's RNG give the same clips
    quiet = AugmentConfig(noise_p=1.0, noise_snr=(120.0, 120.0))
    z = NoisyMel(quiet, FeatureConfig()).train()(x, waves, n)
    torch.testing.assert_close(z, x, atol=0.05, rtol=0)  # noise 120 dB down: the stored features again


def test_noisy_mel_needs_the_waveforms_and_checks_its_options() -> None:
    from sononet.features.mel import FeatureConfig
    from sononet.train.augment import NoisyMel

    with pytest.raises(ValueError, match="with_wave"):
        NoisyMel(AugmentConfig(noise_p=0.5), FeatureConfig()).train()(torch.zeros(2, 128, 94), None, None)
    for bad in ({"noise_p": 1.5}, {"noise_p": float("nan")}, {"noise_snr": (30.0, 10.0)},
                {"noise_snr": (0.0, float("inf"))}):  # fmt: skip
        with pytest.raises(ValueError):
            AugmentConfig(**bad)


@pytest.mark.parametrize("command", ["train-all", "nested"])
def test_noise_p_option_reaches_the_spec(command: str, tmp_path) -> None:
    from click.testing import CliRunner

    from sononet.cli import main

    r = CliRunner().invoke(main, [command, "--out", str(tmp_path / "r"), "--noise-p", "0.5", "--print-spec"])
    assert r.exit_code == 0 and "noise_p = 0.5" in r.output, r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["nan", "-0.1", "1.5", "inf", "x", "", "1e309"])
def test_noise_p_option_refuses_bad_values_in_one_line(value: str, tmp_path) -> None:
    from click.testing import CliRunner

    from sononet.cli import main

    r = CliRunner().invoke(main, ["train-all", "--out", str(tmp_path / "r"), "--noise-p", value, "--print-spec"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "noise" in r.output.strip().splitlines()[-1] and not (tmp_path / "r").exists()
