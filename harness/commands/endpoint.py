"""`scones serve`: run a model.tar.gz as a local SageMaker endpoint (container + runtime API + data capture)."""
from __future__ import annotations

import logging
import os

import click

# Before torch is imported: idle OpenMP threads sleep instead of spinning on cores the event loop and the
# other workers need (with 2 torch threads and active spinning, the server slowed 30-fold on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scones import contract
from scones import settings as scones_settings
from scones.deploy import local as local_target
from scones.harness.commands.options import endpoint_name_option, port_option
from scones.harness.serving.capture import DEFAULT_CSV_CONTENT_TYPES, DEFAULT_JSON_CONTENT_TYPES
from scones.harness.serving.server import DEFAULT_INFERENCE_THREADS, WORKERS_ENV


@click.command()
@click.option("--model", "model", required=True, type=click.Path(exists=True),
              help="model.tar.gz, a directory holding one (as `scones train --out` writes), or an unpacked model dir.")
@endpoint_name_option(contract.ENDPOINT_NAME)
@click.option("--variant-name", default=contract.VARIANT_NAME, show_default=True)
@click.option("--host", default=local_target.HOST, show_default=True)
@port_option("--port", "Port to listen on.", default=local_target.DEFAULT_ENDPOINT_PORT)
@click.option("--capture", "capture_uri", default=None, metavar="s3://BUCKET/PREFIX",
              help="Enable data capture to this DestinationS3Uri.")
@click.option("--sampling", default=100.0, show_default=True, type=click.FloatRange(0, 100),
              help="InitialSamplingPercentage of data capture.")
@click.option("--capture-mode", "capture_modes", multiple=True, type=click.Choice(["Input", "Output"]),
              default=("Input", "Output"), show_default=True, help="CaptureOptions; repeat for both.")
@click.option("--csv-content-type", "csv_types", multiple=True, default=DEFAULT_CSV_CONTENT_TYPES, show_default=True,
              help="CaptureContentTypeHeader.CsvContentTypes (repeatable).")
@click.option("--json-content-type", "json_types", multiple=True, default=DEFAULT_JSON_CONTENT_TYPES,
              show_default=True, help="CaptureContentTypeHeader.JsonContentTypes (repeatable).")
@click.option("--capture-flush-seconds", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="Longest a captured record waits in the spool before its file is uploaded to S3.")
@click.option("--capture-spool", "capture_spool", default=None, type=click.Path(file_okay=False),
              envvar=scones_settings.CAPTURE_SPOOL, show_envvar=True,
              help="Folder where every captured record is written before the reply and kept after upload "
                   "[default: <state dir>/capture-spool/<endpoint-name>].")
@click.option("--inference-threads", default=None, type=click.IntRange(0),
              help="Threads running the handlers, one request each (the container's TorchServe workers); 0 runs "
                   f"them on the event loop.  [default: ${WORKERS_ENV}, or SAGEMAKER_TS_MIN_WORKERS (1) once a "
                   f"SAGEMAKER_TS_* variable is set, as in the container; else {DEFAULT_INFERENCE_THREADS}]")
@click.option("--torch-threads", default=1, show_default=True, type=click.IntRange(1),
              help="torch intra-op threads per inference.")
@click.option("--max-batch-size", default=1, show_default=True, type=click.IntRange(1),
              help="Opt-in, scones' own dynamic batching, not the container's: up to this many waiting requests "
                   "share one predict_fn call (the SageMaker PyTorch container calls predict_fn once per request, "
                   "even with SAGEMAKER_TS_BATCH_SIZE set). Your predict_fn must then take a batch.")
@click.option("--max-batch-delay-ms", default=0.0, show_default=True, type=click.FloatRange(0),
              help="With --max-batch-size: longest a worker waits for more requests to fill a batch; 0 batches only "
                   "what is already waiting.")
@click.option("--http", "http_impl", default="auto", show_default=True, type=click.Choice(["auto", "h11", "httptools"]),
              help="uvicorn HTTP parser (auto: httptools when installed).")
@click.option("--loop", "loop_impl", default="auto", show_default=True, type=click.Choice(["auto", "asyncio", "uvloop"]),
              help="uvicorn event loop (auto: uvloop when installed).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(model, endpoint_name, variant_name, host, port, capture_uri, sampling, capture_modes, csv_types,
          json_types, capture_flush_seconds, capture_spool, inference_threads, torch_threads, max_batch_size, max_batch_delay_ms,
          http_impl, loop_impl, log_level):
    """Serve MODEL as the SageMaker endpoint ENDPOINT-NAME on http://HOST:PORT until Ctrl-C / SIGTERM.

    Point boto3 at it with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://HOST:PORT. Data capture
    goes to S3 wherever AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL say; shutdown flushes it.
    """
    from scones.harness.serving.capture import CaptureConfig
    from scones.harness.serving.server import EndpointSettings
    from scones.harness.serving.server import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    capture = None
    if capture_uri:
        try:
            capture = CaptureConfig(
                destination_s3_uri=capture_uri,
                sampling_percentage=sampling,
                capture_input="Input" in capture_modes,
                capture_output="Output" in capture_modes,
                csv_content_types=tuple(csv_types),
                json_content_types=tuple(json_types),
            )
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--capture") from error
    settings = EndpointSettings(
        model=model,
        endpoint_name=endpoint_name,
        variant_name=variant_name,
        capture=capture,
        inference_threads=inference_threads,
        torch_threads=torch_threads,
        max_batch_size=max_batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        capture_writer_options={"flush_interval_s": capture_flush_seconds,
                                "spool_dir": capture_spool or scones_settings.state_dir() / "capture-spool" / endpoint_name},
    )
    batching = (f"batches of up to {settings.max_batch_size} waiting at most {settings.max_batch_delay_ms:g} ms "
                f"(scones' opt-in)" if settings.max_batch_size > 1 else "one request per predict_fn call, as the container")
    click.echo(f"endpoint {endpoint_name} on http://{host}:{port} (model {model}, "
               f"capture {'to ' + capture_uri + f' at {sampling:g}%' if capture else 'off'}, "
               f"{settings.inference_threads} inference threads, {batching})", err=True)
    run_server(settings, host=host, port=port, log_level=log_level, http=http_impl, loop=loop_impl)


if __name__ == "__main__":  # `python -m scones.harness.commands.endpoint`: how scones.harness.endpoint starts a subprocess
    serve()
