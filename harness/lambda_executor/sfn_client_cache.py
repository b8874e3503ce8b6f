"""Placeholder: the Step Functions client cache patch (applied at plugin load)."""


def apply() -> bool:
    return False
