"""The SageMaker control plane we answer on LocalStack's gateway (LocalStack's free edition has none).

- api.py: the gateway handler (JSON 1.1, `X-Amz-Target: SageMaker.<Op>`), AWS's error shapes and
  the request validation botocore's `sagemaker` service model describes; runs inside LocalStack.
- control.py: the operations and their stores (models, endpoint configs, endpoints, training
  jobs); runs inside LocalStack, which has no torch.
- endpoint_host.py, training_host.py: the processes an endpoint and a training job are, started with
  the project's own Python (the one with torch); they report to control.py on their stdout.
- processes.py: the record of those processes under the state dir, for `scones down`/`status`.
"""
