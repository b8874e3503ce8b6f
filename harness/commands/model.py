"""`scones train`: train the classifier with the SageMaker script-mode entry point, locally."""
from __future__ import annotations

import json
from pathlib import Path

import click

from scones import settings


def _parse_hyperparameter(ctx, param, values: tuple[str, ...]) -> dict[str, object]:
    from scones.deploy.sagemaker import hyperparameter_value

    parsed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx=ctx, param=param)
        parsed[name.strip()] = hyperparameter_value(value)  # the key verbatim, as SageMaker keeps it
    return parsed


@click.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"staged data with {{train,test}}/{{bicycle,motorcycle}}/ [default: ${settings.DATA_DIR}, data_dir in [tool.scones] or <state dir>/data]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="receives model.tar.gz, metrics.json, baseline.json and train.log")
@click.option("--epochs", type=int, default=None, help="training epochs [train.py's default]")
@click.option("--seed", type=int, default=None, help="random seed [0]")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="peak learning rate")
@click.option("--widths", default=None, help="channels per ResNet stage, e.g. 32,64,128")
@click.option("--blocks", default=None, help="BasicBlocks per stage, e.g. 1,1,1")
@click.option("--hyperparameter", "-H", "extra", multiple=True, callback=_parse_hyperparameter,
              help="any other train.py hyperparameter as NAME=VALUE (repeatable), e.g. -H label_smoothing=0.05; "
                   "VALUE is JSON when it parses (64, false, [32, 64, 128]), else a string, and reaches train.py "
                   "as a SageMaker training job passes it")
@click.option("--toolkit-python", envvar=settings.TRAINING_TOOLKIT_PYTHON, default=None, metavar="PYTHON",
              help="a Python with AWS's sagemaker-training + sagemaker-pytorch-training to run the job "
                   f"[${settings.TRAINING_TOOLKIT_PYTHON}; default: this Python if it has them, else our port of the toolkit]")
def train(data_dir, out_dir, epochs, seed, batch_size, lr, widths, blocks, extra, toolkit_python) -> None:
    """Train with local_model/train.py as a SageMaker training job runs it, and pack model.tar.gz.

    Runs AWS's sagemaker-training toolkit when --toolkit-python names a Python that has it (or this
    one has it), else our port of it: the same command line and SM_* environment (tests/parity).
    """
    from scones.harness.training_job import AUTO, TrainingError, train_model

    hyperparameters = {name: value for name, value in {
        "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "widths": widths, "blocks": blocks,
    }.items() if value is not None}
    hyperparameters.update(extra)
    data = settings.data_dir(data_dir)
    try:
        train_model(data, out_dir, hyperparameters, toolkit=toolkit_python or AUTO)
    except (FileNotFoundError, TrainingError) as error:
        raise click.ClickException(str(error)) from error
    metrics = json.loads((out_dir / "metrics.json").read_text())
    precision = metrics["threshold_precision"]
    click.echo(
        f"\nmodel:     {out_dir / 'model.tar.gz'}\n"
        f"metrics:   {out_dir / 'metrics.json'}\n"
        f"accuracy:  {metrics['test_accuracy']:.3f} on {metrics['n_test']} test images\n"
        f"at {metrics['threshold']}: coverage {metrics['threshold_coverage']:.3f}, precision "
        f"{'n/a' if precision is None else f'{precision:.3f}'}, temperature {metrics['temperature']:.3f}\n"
        f"non-vehicles: {metrics['ood_rejection']:.1%} of {metrics['ood_n']} generated images refused below the threshold\n"
        f"confusion: {metrics['confusion_matrix']} (rows true, columns predicted: {', '.join(metrics['classes'])})\n"
        f"training:  {metrics['training_seconds']:.0f} s, {metrics['epochs']} epochs on {metrics['device']}"
    )
