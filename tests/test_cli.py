"""The command line's one error handler, and option choices read from the registries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from sononet.cli import main
from sononet.cli.options import MEL_BACKENDS, MODELS, RegistryChoice, RegistryList

ROOT = Path(__file__).resolve().parents[1]


def test_a_user_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["prepare", "--demo", "--data", str(tmp_path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: pass exactly one of --data PATH or --demo"


def test_a_config_value_out_of_range_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["prepare", "--demo", "--out", str(tmp_path / "s"), "--shard-size", "0"])
    assert result.exit_code == 2 and "shard_size must be positive. Found: 0" in result.output
    assert "Traceback" not in result.output


def test_a_missing_model_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["evaluate", "--model", str(tmp_path / "empty"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and "is missing" in result.output


@pytest.mark.parametrize("bug", [KeyError("clip_id"), RuntimeError("boom"), TypeError("bad call"), OSError(5, "EIO")])
def test_a_bug_keeps_its_traceback(bug: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sononet.prepare

    def broken(cfg, progress=True):
        raise bug

    monkeypatch.setattr(sononet.prepare, "prepare", broken)
    result = CliRunner().invoke(main, ["prepare", "--demo", "--out", str(tmp_path / "s")])
    assert result.exception is bug and result.exit_code == 1  # not turned into "error: ..." and exit 2


def test_verbose_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-v", "prepare", "--demo", "--out", str(tmp_path / "s"), "--shard-size", "0"])
    assert result.exit_code == 2 and "Traceback" in result.output and "shard_size must be positive" in result.output


def test_choice_lists_come_from_the_registries() -> None:
    from sononet.features.mel import BACKENDS
    from sononet.models.registry import MODELS as REGISTRY

    assert RegistryChoice(MODELS).choices == tuple(REGISTRY)
    assert RegistryChoice(MEL_BACKENDS, extra=("auto",)).choices == ("auto", *BACKENDS)
    assert RegistryList(MODELS).convert("cnn, bigru", None, None) == ("cnn", "bigru")
    result = CliRunner().invoke(main, ["train-all", "--models", "cnn,resnet", "--print-spec"])
    assert result.exit_code == 2 and "'resnet' is not one of 'cnn', 'bigru', 'wav2vec2'" in result.output


@pytest.mark.checkout  # reads the repository, not the installed package
def test_click_lives_in_the_cli_package_only() -> None:
    """The library raises; only sononet/cli turns errors into exit codes and text."""
    users = []
    for path in (ROOT / "sononet").rglob("*.py"):
        if path.is_relative_to(ROOT / "sononet" / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "click" or n.startswith("click.") for n in names):
                users.append(str(path.relative_to(ROOT)))
    assert users == []


@pytest.fixture
def unwritable(tmp_path: Path):
    """A folder this process may not create anything in: chmod 555 for a user; /sys for root."""
    import os

    if os.geteuid() != 0:
        parent = tmp_path / "read-only"
        parent.mkdir()
        parent.chmod(0o555)
        yield parent / "out"
        parent.chmod(0o755)
        return
    probe = Path("/sys/sononet-write-probe")
    try:
        probe.mkdir()
    except OSError:
        yield probe / "out"
        return
    probe.rmdir()
    pytest.skip("running as root where /sys is writable: no folder here refuses root's writes")


def test_an_unwritable_or_blocked_out_is_one_line(unwritable: Path, tmp_path: Path) -> None:
    import soundfile as sf
    from conftest import tone
    from test_label import save_tiny

    model = save_tiny(tmp_path / "cnn" / "model")
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0), 16_000)
    (tmp_path / "a-file").write_text("in the way")
    commands = {
        "prepare": ["prepare", "--demo", "--out", "{out}"],
        "train-all": ["train-all", "--models", "cnn", "--out", "{out}"],
        "label": ["label", str(clip), "--model", str(model), "--out", "{out}/labels.parquet"],
        "export": ["export", "--model", str(model), "--out", "{out}"],
    }
    for name, args in commands.items():
        for out, says in ((unwritable, "cannot write to"), (tmp_path / "a-file", "is not a folder")):
            result = CliRunner().invoke(main, [a.format(out=out) for a in args])
            last = result.output.strip().splitlines()[-1]
            assert result.exit_code == 2 and last.startswith("error: ") and says in last, (name, result.output)
            assert "Traceback" not in result.output and str(out) in last
