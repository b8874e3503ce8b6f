"""`scones stage`: put the bicycle/motorcycle images where training and the deploy expect them."""
from __future__ import annotations

import click

from scones.harness import staging
from scones.settings import state_dir


@click.command()
@click.option("--from-dir", "from_dir", type=click.Path(file_okay=False, exists=True),
              help="A folder already in the {train,test}/{bicycle,motorcycle}/ layout (e.g. ../shared/data).")
@click.option("--from-archive", "from_archive", metavar="PATH_OR_URL",
              help="The CIFAR-100 python archive: a local path or a URL (downloaded once into a cache).")
@click.option("--md5", default=None, metavar="HEX",
              help="Expected MD5 of the archive (default: the official cifar-100-python.tar.gz's).")
@click.option("--skip-md5", is_flag=True, help="Do not check the archive's MD5.")
@click.option("--link", is_flag=True, help="With --from-dir: symlink the images instead of copying them.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where to stage (default: <state dir>/data). Replaced atomically.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def stage(from_dir, from_archive, md5, skip_md5, link, out, quiet):
    """Stage the images into OUT/{train,test}/{bicycle,motorcycle}/ with train.lst and test.lst."""
    if bool(from_dir) == bool(from_archive):
        raise click.UsageError("give exactly one of --from-dir DIR or --from-archive PATH_OR_URL")
    if (md5 or skip_md5) and not from_archive:
        raise click.UsageError("--md5 and --skip-md5 go with --from-archive")
    if link and not from_dir:
        raise click.UsageError("--link goes with --from-dir")
    out = out or str(state_dir() / "data")
    try:
        if from_dir:
            result = staging.stage_from_dir(from_dir, out, link=link, progress=not quiet)
        else:
            expected = None if skip_md5 else (md5 or staging.CIFAR100_MD5)
            result = staging.stage_from_archive(from_archive, out, md5=expected, progress=not quiet)
    except staging.StagingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary())
