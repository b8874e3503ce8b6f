"""LocalStack Lambda runtime executor that runs each execution environment as a local process.

Loaded inside LocalStack's own venv (Python 3.13) through the plux entry point
`localstack.lambda.runtime_executor: scones-process`, which harness/localstack.py registers there.
Only `names` may be imported from the project's side: the rest needs LocalStack.
"""
