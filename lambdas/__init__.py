"""The three Lambda handlers of the workflow. Standard library + boto3 only; no knowledge of the target."""
