"""Fill the workflow's ASL template with the three function ARNs, and check the result.

The template (definition.template.json) names each function's ARN as a placeholder
"${<function name>}", e.g. "${classifyImage}". render_definition() refuses a result that
still holds a placeholder, sends a state to a Next that does not exist, or has a state that
cannot be reached from StartAt, so a broken definition never reaches a deploy.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

TEMPLATE_PATH = Path(__file__).resolve().parent / "definition.template.json"
FUNCTION_NAMES = ("serializeImageData", "classifyImage", "filterInferences")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


class DefinitionError(ValueError):
    """The template or the rendered definition is not a valid workflow."""


def render_definition(function_arns: dict[str, str], template: str | None = None) -> str:
    """The state machine definition (JSON text) with every placeholder replaced by its ARN.

    function_arns maps a function name ("serializeImageData", ...) to its Lambda ARN.
    template defaults to the shipped definition.template.json.
    """
    text = TEMPLATE_PATH.read_text(encoding="utf-8") if template is None else template
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"the state machine template is not valid JSON: {exc}") from None

    for name, arn in function_arns.items():
        if not isinstance(arn, str) or not arn.strip():
            raise DefinitionError(f"the ARN given for {name!r} is empty or not a string: {arn!r}")
    used = {match for _, value in _strings(definition) for match in PLACEHOLDER.findall(value)}
    unused = sorted(set(function_arns) - used)
    if unused:
        raise DefinitionError(
            f"ARNs given for {unused}, but the template has no such placeholder "
            f"(placeholders: {sorted('${' + name + '}' for name in used)})"
        )

    rendered = _substitute(definition, function_arns)
    for path, value in _strings(rendered):
        leftover = PLACEHOLDER.search(value)
        if leftover:
            raise DefinitionError(
                f"unfilled placeholder {leftover.group(0)} at {path}: no ARN given for "
                f"{leftover.group(1)!r} (given: {sorted(function_arns)})"
            )
    validate_definition(rendered)
    return json.dumps(rendered, indent=2)


def validate_definition(definition: dict) -> None:
    """Refuse a missing StartAt, a Next/Default to an unknown state, or an unreachable state."""
    states = definition.get("States")
    if not isinstance(states, dict) or not states:
        raise DefinitionError("the definition has no States")
    start = definition.get("StartAt")
    if not isinstance(start, str) or start not in states:
        raise DefinitionError(f"StartAt {start!r} is not a state (states: {sorted(states)})")

    for name, state in states.items():
        for field, target in _transitions(state):
            if target not in states:
                raise DefinitionError(
                    f"state {name!r} has {field} {target!r}, which is not a state (states: {sorted(states)})"
                )
        terminal = state.get("End") is True or state.get("Type") in ("Succeed", "Fail", "Choice")
        if not terminal and "Next" not in state:
            raise DefinitionError(f"state {name!r} has neither Next nor End: true")

    reachable: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        reachable.add(name)
        pending.extend(target for _, target in _transitions(states[name]))
    unreachable = sorted(set(states) - reachable)
    if unreachable:
        raise DefinitionError(f"states {unreachable} cannot be reached from StartAt {start!r}")


def _transitions(state: dict) -> Iterator[tuple[str, str]]:
    if "Next" in state:
        yield "Next", state["Next"]
    if "Default" in state:
        yield "Default", state["Default"]
    for index, choice in enumerate(state.get("Choices", [])):
        if "Next" in choice:
            yield f"Choices[{index}].Next", choice["Next"]
    for index, catcher in enumerate(state.get("Catch", [])):
        if "Next" in catcher:
            yield f"Catch[{index}].Next", catcher["Next"]


def _strings(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), node)
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, values) for value in node]
    return node
