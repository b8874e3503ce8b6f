"""Imports point one way: harness -> deploy -> the self-contained code and the package root (tests/import_graph.py)."""
from __future__ import annotations

import shutil

import import_graph


def test_no_layer_imports_one_above_it():
    assert import_graph.wrong_way(import_graph.graph()) == []


def test_an_arrow_upwards_or_out_of_the_lambda_zip_is_caught(tmp_path):
    for folder in import_graph.FOLDERS:
        shutil.copytree(import_graph.CHECKOUT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "deploy" / "upwards.py").write_text("from scones.harness import stack\n")
    (tmp_path / "lambdas" / "outwards.py").write_text("from scones import contract\n")
    (tmp_path / "local_model" / "relative.py").write_text("from .. import settings\n")
    problems = import_graph.wrong_way(import_graph.graph(tmp_path))
    assert any(problem.startswith("scones.deploy -> scones.harness: deploy/upwards.py") for problem in problems)
    assert any(problem.startswith("scones.lambdas -> scones: lambdas/outwards.py") for problem in problems)
    assert any(problem.startswith("scones.local_model -> scones: local_model/relative.py") for problem in problems)
