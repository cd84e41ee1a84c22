"""What the template's tests stand on, apart from the tests themselves.

- variants: the answers to bake, derived from cookiecutter.json
- tools: the locked test tools (ruff, mypy, ...) and how tests call them
- composefile: the real Docker Compose v2 parser, for a rendered compose.yaml
- waiting: `eventually`, the one way a test waits for something to happen
- localstack: a rendered project's services as local processes (run tier)
- flower: Flower started on a local stack, and its HTTP API
- containerstack, apishim: the rendered compose.yaml on a container engine (container tier)
- manifests: the rendered Kubernetes manifests, built and read as the cluster would
"""
