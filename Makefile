# The template's own chores and test tiers, one entry point: `make` lists them.
# Each target is a short command over scripts/; CI runs `scripts/run-tests` (all tiers),
# which a newcomer can run directly too (README.md).
.DEFAULT_GOAL := help
.PHONY: help test static run containers bench bake lint lock

# Arguments for pytest, e.g. make run PYTEST_ARGS='-k rabbitmq'
PYTEST_ARGS ?=
# Answers for `make bake`, e.g. make bake ANSWERS='broker=rabbitmq use_flower=true'
ANSWERS ?=

help: ## list the tiers and chores
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## /  make \1\t/' | expand -t 20

test: ## every tier, as CI runs it: static, run, then containers
	scripts/run-tests

static: ## the static tier alone: bake every variant, lint, validate (no servers)
	scripts/run-tests -m "not run" $(PYTEST_ARGS)

run: ## the run tier alone: every variant's processes on real Redis, RabbitMQ, PostgreSQL
	scripts/run-tests -m run $(PYTEST_ARGS)

containers: ## the container tier alone: the rendered images and compose.yaml on an engine
	scripts/run-container-tests $(PYTEST_ARGS)

bench: ## benchmarks, figures written into BENCHMARKS.md (minutes; a quiet machine)
	scripts/bench

bake: ## render a project into build/ with the default answers, or ANSWERS
	uv run --locked cookiecutter --no-input --overwrite-if-exists --output-dir build . $(ANSWERS)

lint: ## ruff and mypy on the template's own code (the tests lint the rendered projects)
	uv run --locked ruff check . && uv run --locked ruff format --check . && uv run --locked mypy

lock: ## remake the rendered projects' uv.lock files (templates/uv-locks/) after a dependency change
	scripts/lock
