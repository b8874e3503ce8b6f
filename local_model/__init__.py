"""The model: data staging, the SageMaker script-mode trainer, the serving handlers and the local endpoint server."""
