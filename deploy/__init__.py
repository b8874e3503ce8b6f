"""Deploying the workflow to a target: one code path, local (LocalStack + our endpoint) or aws."""
