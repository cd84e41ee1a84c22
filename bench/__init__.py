"""The template's benchmark: `make bench` (scripts/bench) runs `python -m bench`.

Not part of a rendered project. Its modules run in three environments: __main__ and
report in the template's own (they bake, start servers through tests/harness and write
BENCHMARKS.md); driver and cpu in a generated project's virtual environment and in
stock Celery's, stock being the control app; floor in the generated project's.
"""
