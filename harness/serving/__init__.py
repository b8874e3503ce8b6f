"""Our SageMaker-compatible endpoint: the HTTP server, its handler service and the data capture writer."""
