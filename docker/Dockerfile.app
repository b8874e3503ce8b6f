# The scones application image: `scones serve` (endpoint), `scones train` (train) and the
# one-shot deploy (harness/compose/deploy.py) run from it, with the project's own code.
# Offline: FROM the debootstrapped base (harness/compose/build-base.sh), wheels from the build
# context (harness/compose/fetch-wheels.sh), `pip install --no-index`.
FROM scones/base:bookworm

ENV PIP_NO_INDEX=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    SCONES_STATE_DIR=/state \
    SCONES_DATA_DIR=/data

# Dependencies first, so a code change does not reinstall torch.
# torchvision's PyPI wheel carries C++ ops built against the CUDA torch; beside the CPU torch
# they cannot load, and the two modules that register fake/autograd kernels for those ops then
# fail at import. Nothing here uses the ops (the model is a plain ResNet), so those two modules
# are emptied rather than left to break `import torchvision`.
COPY docker/wheels/py311 /wheels
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --find-links /wheels /wheels/*.whl \
    && TV="$(python -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchvision").origin))')" \
    && : > "$TV/_meta_registrations.py" && : > "$TV/_autograd_registrations.py" \
    && python -c 'import torch, torchvision; from torchvision.models.resnet import ResNet; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

COPY pyproject.toml README.md /app/
COPY scones /app/scones
COPY harness /app/harness
COPY lambdas /app/lambdas
COPY state_machine /app/state_machine
COPY local_model /app/local_model
COPY deploy /app/deploy
RUN pip install --no-cache-dir --find-links /wheels --no-deps /app && scones --help >/dev/null

WORKDIR /state
CMD ["scones", "--help"]
