"""Throughput patch for LocalStack 4.14.0 Step Functions: each JSONPath of a definition parsed once.

Why: 4.14.0 parses a state's JSONPath text at every use: `asl/utils/json_path.py::extract_json`
(InputPath, OutputPath, `.$` parameters, Choice variables, intrinsic arguments) calls jsonpath_ng's
`ext.parse`, and `asl/component/common/path/result_path.py` calls `jsonpath_ng.parse`, each time.
jsonpath_ng builds a new PLY parser and lexer for every parse (its lexer reflects over its own token
rules and compiles their regexes): about 0.3 ms per path here, and py-spy put 15% of LocalStack's GIL
time during concurrent Scones executions in it (`LexerReflect.get_rules`), for the same few paths
every time. Here both names point to memoized parsers: a parsed path is a tree that `find` and
`update_or_create` read and never change, so one tree serves every execution and thread. A path
that does not parse raises as before, and is parsed again at its next use (errors are not kept).

Pinned: applied only to localstack-core 4.14.0 (its jsonpath-ng as it pins it), where both call sites
were read; SCONES_SFN_JSONPATH_CACHE=0 turns it off (e.g. to measure the difference). Its status (hits,
misses, paths held) is in GET /_scones/executor.
"""
from __future__ import annotations

import functools

from scones.harness.lambda_executor import pinned
from scones.settings import SFN_JSONPATH_CACHE as JSONPATH_CACHE_ENV

MAX_PATHS = 4096   # the paths of a few state machines and their revisions; least recently used goes first

_parsers: list[functools._lru_cache_wrapper] = []


def _install() -> None:
    from localstack.services.stepfunctions.asl.component.common.path import result_path
    from localstack.services.stepfunctions.asl.utils import json_path

    for module in (json_path, result_path):
        cached = functools.lru_cache(maxsize=MAX_PATHS)(module.parse)
        module.parse = cached
        _parsers.append(cached)


PATCH = pinned.Patch("Step Functions JSONPath cache (each path parsed once)", JSONPATH_CACHE_ENV, _install)
apply = PATCH.apply


def status() -> dict:
    infos = [parser.cache_info() for parser in _parsers]
    return {**PATCH.status(), "hits": sum(info.hits for info in infos), "misses": sum(info.misses for info in infos),
            "paths": sum(info.currsize for info in infos)}
