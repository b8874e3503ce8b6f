"""IAM checked locally: AWS's policy evaluation (evaluate.py), requests as IAM sees them (actions.py),
and the LocalStack gateway handler that denies what a role's policies do not allow (gateway.py)."""
