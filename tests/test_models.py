"""Models: one interface, length-aware pooling, the shared loss, freezing, save/load, errors.

Every model is tiny here (random init) so the file runs in seconds on CPU; the properties
tested (padding invariance, round trips, freezing) do not depend on size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sononet.models import build_model, get_spec, load_model, model_names, save_model
from sononet.models.backbone import BackboneNotFoundError

N_CLASSES = 6
MEL_LENGTHS = [94, 80, 50, 20]  # frames; 94 = 3 s at hop 512
WAVE_LENGTHS = [48_000, 40_000, 20_000, 6_000]  # samples at 16 kHz
SMALL = {"cnn": {}, "bigru": {"hidden": 32}, "wav2vec2": {"tiny": True}}  # fast variants per model


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: one thread each keeps parallel test runs from thrashing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features, zero beyond each clip's length, as the trainer pads them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(MEL_LENGTHS if kind == "mel" else WAVE_LENGTHS)
    shape = (4, 128, 94) if kind == "mel" else (4, 48_000)
    x = torch.randn(shape, generator=g)
    valid = torch.arange(shape[-1])[None, :] < lengths[:, None]  # (B, T)
    return x * (valid[:, None, :] if kind == "mel" else valid), lengths


def build(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, N_CLASSES, **{**SMALL[name], **overrides})


def kind(name: str) -> str:
    return get_spec(name).input_kind


def pad_more(x: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], dim=-1)


LABELS = torch.tensor([0, 1, 2, 5])


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> str:
    """A tiny random Whisper checkpoint on disk (4 s window) to exercise the Whisper path offline."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    d = tmp_path_factory.mktemp("whisper")
    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=200,  # 400 mel frames = 4 s, not 30 s, to keep the test fast
        max_target_positions=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    WhisperModel(cfg).save_pretrained(d)
    WhisperFeatureExtractor(feature_size=80, chunk_length=4).save_pretrained(d)
    return str(d)


# --- forward / backward ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_forward_backward_reaches_every_trainable_parameter(name):
    model = build(name).train()
    x, lengths = make_batch(kind(name))
    logits, loss = model(x, lengths, LABELS)
    assert logits.shape == (4, N_CLASSES)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_no_labels_means_no_loss(name):
    x, lengths = make_batch(kind(name))
    logits, loss = build(name).eval()(x, lengths)
    assert logits.shape == (4, N_CLASSES) and loss is None


def test_lengths_default_to_full_clips():
    model = build("bigru").eval()
    x, _ = make_batch("mel")
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x, torch.full((4,), 94))
    torch.testing.assert_close(a, b)


# --- padding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_extra_padding_and_batching_do_not_change_logits(name):
    model = build(name).eval()
    x, lengths = make_batch(kind(name))
    extra = 30 if kind(name) == "mel" else 8_000
    with torch.no_grad():
        base, _ = model(x, lengths)
        padded, _ = model(pad_more(x, extra), lengths)
        one_by_one = torch.cat([model(x[i : i + 1, ..., :n], None)[0] for i, n in enumerate(lengths.tolist())])
        # Control: without lengths the padding is read as signal, so the test can tell.
        blind, _ = model(pad_more(x, extra), None)
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one_by_one, base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(blind, base, atol=1e-3)


def test_whisper_backbone_trains_and_ignores_padding(whisper_dir):
    model = build_model("wav2vec2", N_CLASSES, backbone=whisper_dir)
    assert model.describe() == f"pretrained: {whisper_dir}"
    x, lengths = make_batch("wave")
    logits, loss = model.train()(x, lengths, LABELS)
    loss.backward()
    assert torch.isfinite(loss) and model.head.emotion[-1].weight.grad.abs().sum() > 0
    assert not model.backbone.model.conv1.weight.requires_grad  # feature encoder frozen by default
    assert model.backbone.model.layers[0].fc1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pad_more(x, 8_000), lengths)[0], model(x, lengths)[0])


# --- loss --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_intensity_head_adds_aux_loss_and_skips_unknown(name):
    model = build(name, n_intensity=3, aux_weight=0.5).eval()  # eval: dropout off, losses comparable
    x, lengths = make_batch(kind(name))
    _, plain = model(x, lengths, LABELS)
    _, with_aux = model(x, lengths, LABELS, torch.tensor([0, 1, 2, -100]))
    _, all_unknown = model(x, lengths, LABELS, torch.full((4,), -100))
    assert with_aux > plain
    assert torch.isfinite(all_unknown)
    torch.testing.assert_close(all_unknown, plain)
    with_aux.backward()
    assert model.head.intensity.weight.grad.abs().sum() > 0


def test_class_weights_and_label_smoothing_change_the_loss():
    x, lengths = make_batch("mel")
    base = build("cnn").eval()
    _, loss = base(x, lengths, LABELS)
    for overrides in ({"class_weights": [5.0, 1, 1, 1, 1, 0.2]}, {"label_smoothing": 0.2}):
        other = build("cnn", **overrides).eval()
        other.load_state_dict(base.state_dict())
        logits, other_loss = other(x, lengths, LABELS)
        torch.testing.assert_close(logits, base(x, lengths)[0])  # same weights, same logits
        assert not torch.isclose(other_loss, loss)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"class_weights": [1.0, 2.0]}, "one weight per class"),
        ({"class_weights": [-1.0] * 6}, "non-negative"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"n_intensity": -1}, "n_intensity"),
        ({"channels": (16, 32), "dropouts": (0.1,)}, "one entry per block"),
    ],
)
def test_bad_config_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        build("cnn", **overrides)


# --- inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "x", "lengths", "match"),
    [
        ("cnn", torch.zeros(2, 64, 94), None, r"\(B, 128, T\)"),
        ("bigru", torch.zeros(2, 128, 94), torch.tensor([95, 10]), r"\[1, 94\]"),
        ("bigru", torch.zeros(2, 128, 94), torch.tensor([0, 10]), r"\[1, 94\]"),
        ("bigru", torch.zeros(2, 128, 94), torch.tensor([10.0, 10.0]), "integer"),
        ("cnn", torch.zeros(2, 128, 94), torch.tensor([10, 10, 10]), r"shape \(2,\)"),
        ("cnn", torch.zeros(2, 128, 8), None, "at least 16 frames"),
        ("wav2vec2", torch.zeros(2, 1, 16_000), None, r"\(B, S\)"),
        ("wav2vec2", torch.zeros(2, 100), None, "too short"),
    ],
)
def test_bad_input_is_refused(name, x, lengths, match):
    with pytest.raises(ValueError, match=match):
        build(name)(x, lengths)


# --- registry ----------------------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert model_names() == ["bigru", "cnn", "wav2vec2"]
    assert {n: get_spec(n).input_kind for n in model_names()} == {
        "bigru": "mel",
        "cnn": "mel",
        "wav2vec2": "wave",
    }
    assert build_model("cnn", 4, n_mels=64).config.n_mels == 64
    with pytest.raises(ValueError, match="unknown model 'resnet'. Valid names: bigru, cnn, wav2vec2"):
        build_model("resnet", N_CLASSES)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden'\]"):
        build_model("bigru", N_CLASSES, hiden=64)


# --- wav2vec2: hub errors and freezing ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["facebook/wav2vec2-base", "/nonexistent/w2v2-dir"])
def test_unreachable_backbone_says_how_to_pass_a_local_dir(source, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, so no 20 s of network retries
    with pytest.raises(BackboneNotFoundError, match=f"could not load (backbone )?'{source}'") as err:
        build_model("wav2vec2", N_CLASSES, backbone=source)
    assert f"download {source} --local-dir DIR" in str(err.value)
    assert "--w2v2 DIR" in str(err.value)


def frozen(module: torch.nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


def test_freezing_options_freeze_what_they_say():
    default = build("wav2vec2")
    assert default.describe() == "random-init tiny, not pretrained"
    enc = default.backbone.model
    assert frozen(enc.feature_extractor) == {False}
    assert frozen(enc.encoder) == frozen(enc.feature_projection) == {True}

    assert frozen(build("wav2vec2", freeze_feature_encoder=False)) == {True}

    k1 = build("wav2vec2", freeze_layers=1).backbone.model
    assert frozen(k1.feature_extractor) == frozen(k1.feature_projection) == frozen(k1.encoder.layers[0]) == {False}
    assert frozen(k1.encoder.layers[1]) == frozen(k1.encoder.layer_norm) == {True}

    probe = build("wav2vec2", freeze_backbone=True).train()
    assert frozen(probe.backbone) == {False}
    assert not probe.backbone.training and probe.head.training  # frozen encoder: no dropout noise
    x, lengths = make_batch("wave")
    probe(x, lengths, LABELS)[1].backward()
    assert probe.layer_weights.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="freeze_layers must be <= 2"):
        build("wav2vec2", freeze_layers=3)


# --- saving ------------------------------------------------------------------------------------------


META = {
    "labels": ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"],
    "features": {"n_mels": 128, "hop_length": 512},
    "norm_mean": np.linspace(-1, 1, 4, dtype=np.float32),  # numpy arrays are stored as lists
    "protocol": "actor-disjoint",
}


def _round_trip(model, name, tmp_path, monkeypatch):
    x, lengths = make_batch(kind(name))
    model.train()(x, lengths, LABELS)  # move batch-norm running statistics off their defaults
    model.eval()
    with torch.no_grad():
        before, _ = model(x, lengths)
    save_model(tmp_path / name, model, name, META)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded, doc = load_model(tmp_path / name)
    assert not loaded.training and loaded.config == model.config
    assert doc["meta"]["labels"] == META["labels"] and doc["meta"]["norm_mean"] == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    assert doc["describe"] == model.describe() == loaded.describe()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths)[0], before, atol=0, rtol=0)
    return loaded


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_save_load_round_trip_gives_identical_logits(name, tmp_path, monkeypatch):
    _round_trip(build(name, n_intensity=3), name, tmp_path, monkeypatch)


def test_saved_encoder_loads_with_stock_transformers(tmp_path, monkeypatch):
    from transformers import AutoModel

    model = build("wav2vec2", freeze_backbone=True)
    _round_trip(model, "wav2vec2", tmp_path, monkeypatch)
    stock = AutoModel.from_pretrained(tmp_path / "wav2vec2" / "backbone", local_files_only=True)
    for key, value in model.backbone.model.state_dict().items():
        torch.testing.assert_close(stock.state_dict()[key], value)


def test_whisper_round_trip(whisper_dir, tmp_path, monkeypatch):
    model = build_model("wav2vec2", N_CLASSES, backbone=whisper_dir, freeze_layers=1)
    loaded = _round_trip(model, "wav2vec2", tmp_path, monkeypatch)
    assert loaded.backbone.is_whisper


def test_save_refuses_unserialisable_meta_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_model(tmp_path / "m", build("cnn"), "cnn", {"bad": object()})
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="expects EmotionBiGRU"):
        save_model(tmp_path / "m", build("cnn"), "bigru", {})


def test_saving_again_replaces_the_model_but_never_a_foreign_directory(tmp_path):
    x, lengths = make_batch("mel")
    first, second = build("cnn").eval(), build("cnn", channels=(8, 16, 32, 64)).eval()
    save_model(tmp_path / "m", first, "cnn", {"epoch": 1})
    save_model(tmp_path / "m", second, "cnn", {"epoch": 2})
    loaded, doc = load_model(tmp_path / "m")
    assert doc["meta"] == {"epoch": 2} and loaded.config.channels == (8, 16, 32, 64)
    torch.testing.assert_close(loaded(x, lengths)[0], second(x, lengths)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging leftovers
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_model(tmp_path / "runs", first, "cnn", {})
    assert (tmp_path / "runs" / "notes.txt").read_text() == "keep me"


def _break_config(d, edit):
    doc = json.loads((d / "config.json").read_text())
    edit(doc)
    (d / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (lambda d: (d / "config.json").unlink(), FileNotFoundError, "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), ValueError, "config.json is not valid JSON"),
        (lambda d: (d / "model.safetensors").unlink(), FileNotFoundError, "model.safetensors is missing"),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64),
            ValueError,
            "model.safetensors is corrupt",
        ),
        (lambda d: _break_config(d, lambda c: c.update(model="resnet")), ValueError, "Valid names: bigru"),
        (lambda d: _break_config(d, lambda c: c.pop("model_config")), ValueError, r"lacks required key\(s\)"),
        (
            lambda d: _break_config(d, lambda c: c["model_config"].update(depth=3)),
            ValueError,
            r"key\(s\) \['depth'\]",
        ),
        (
            lambda d: _break_config(d, lambda c: c["model_config"].update(channels=[8, 16, 32, 64])),
            ValueError,
            "model.safetensors does not fit",
        ),
    ],
)
def test_load_names_the_broken_file(damage, error, match, tmp_path):
    save_model(tmp_path / "m", build("cnn"), "cnn", {})
    damage(tmp_path / "m")
    with pytest.raises(error, match=match):
        load_model(tmp_path / "m")


def test_load_missing_directory_or_encoder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    save_model(tmp_path / "w", build("wav2vec2"), "wav2vec2", {})
    (tmp_path / "w" / "backbone" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="could not read the saved encoder"):
        load_model(tmp_path / "w")
