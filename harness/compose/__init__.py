"""The docker-compose stack: entry points of its services (docker-compose.yml, docker/Dockerfile.*).

Each service runs the code `scones up` runs, only inside a container: LocalStack with the
environment harness/localstack.py composes, `scones serve`, `scones train`, and the deploy
path of harness/stack.py (scones.deploy.workflow against scones.deploy.local's endpoints).
"""
