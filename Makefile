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

# The whole story on a fresh machine: stage the images, train, bring the local stack up,
# evaluate random test images through the workflow, monitor the captured inferences for
# drift, write the report page, and take the stack down again, even when a step fails.
# DEMO_N is how many test images to evaluate (0 = all 200). SCONES_STATE_DIR and the
# SCONES_*_PORT variables move the whole demo elsewhere.
DEMO_STATE := $(or $(SCONES_STATE_DIR),.scones)
DEMO_DATA := $(DEMO_STATE)/data
DEMO_MODEL := $(DEMO_STATE)/demo-model
DEMO_N ?= 0
DEMO_SEED ?= 1
SCONES := SCONES_STATE_DIR=$(abspath $(DEMO_STATE)) $(BIN)/scones

demo: venv
	$(SCONES) stage --from-dir $(DATA) --out $(DEMO_DATA) --link
	@if [ -f $(DEMO_MODEL)/model.tar.gz ]; then echo "train: reusing $(DEMO_MODEL) (rm -r it to retrain)"; \
	else $(SCONES) train --data $(DEMO_DATA) --out $(DEMO_MODEL); fi
	@set -e; trap 'echo "--- scones down"; $(SCONES) down' EXIT; trap 'exit 130' INT TERM; \
	echo "--- scones up"; $(SCONES) up --data $(DEMO_DATA) --model $(DEMO_MODEL); \
	echo "--- scones evaluate"; $(SCONES) evaluate --n $(DEMO_N) --seed $(DEMO_SEED) --concurrency 4; \
	echo "--- scones monitor"; $(SCONES) monitor --wait-for-evaluation; \
	echo "--- scones report"; $(SCONES) report
	@echo "Open the report: file://$(abspath $(DEMO_STATE))/reports/report.html"

# The parity suite runs beside the rest, in a second pytest process (tests/run_suites.py says why).
test: venv
	$(BIN)/python tests/run_suites.py

clean:
	rm -rf $(VENV) .scones

# The parity suite (tests/parity: AWS's SageMaker toolkits run our artifacts) under the PyTorch
# 2.5.1 images' torch 2.5.1 / torchvision 0.20.1 instead of the project's torch. Not part of
# `make test`: PyPI's torch 2.5.1 is the CUDA build, 2.9 GB of wheels with its nvidia-* deps
# (about 6 GB installed) in a second cached toolkit venv under the state dir.
.PHONY: parity-torch25
parity-torch25: venv
	SCONES_PARITY_REQUIREMENTS=tests/parity/torch25-requirements.txt $(BIN)/pytest -m parity tests/parity
