# The two set-up-and-go targets are `make demo` and `make test`; each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
STAGED := .scones/data

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[test]'
	touch $@

demo: venv
	$(BIN)/scones stage --from-dir $(DATA) --out $(STAGED)

test: venv
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .scones
