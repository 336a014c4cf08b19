"""``sononet export``: a saved model as ONNX (see :mod:`sononet.export`)."""

from __future__ import annotations

from pathlib import Path

import click

from sononet.cli.options import given


@click.command("export")
@click.option(
    "--model", required=True, type=click.Path(exists=True, file_okay=False), help="Saved model or ensemble folder."
)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="Model format.")
@click.option("--out", type=click.Path(), default=None, help="Output folder [default: <model>-onnx].")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: 17].")
def export_command(model: str, fmt: str, out: str | None, opset: int | None) -> None:
    """Export a trained model (CNN, BiGRU; wav2vec2 where torch's exporter handles it) to ONNX.

    \b
    sononet export --model runs/demo/cnn/model --format onnx --out exported/cnn
    sononet export --model runs/demo/ensemble --out exported/ensemble   # CNN + BiGRU averaged in one graph
    pip install -e '.[export]'   # onnx + onnxruntime, to export and run it
    """
    from sononet.errors import UserError
    from sononet.export import ExportConfig, export_model

    out = out or f"{Path(model).resolve()}-onnx"
    try:
        info = export_model(given(ExportConfig(model=model, out=out, format=fmt), opset=opset))
    except ImportError as e:  # onnx is an extra
        raise UserError(str(e)) from e
    click.echo(f"{info['model_id']} -> {Path(out) / 'model.onnx'} (inputs: {', '.join(info['inputs'])})")
