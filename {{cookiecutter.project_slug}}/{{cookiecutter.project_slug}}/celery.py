"""The Celery application, laid out like Celery's own examples/next-steps/proj."""

from celery import Celery

app = Celery("{{ cookiecutter.project_slug }}", include=["{{ cookiecutter.project_slug }}.tasks"])
# All settings, each with its reason, live in config.py.
app.config_from_object("{{ cookiecutter.project_slug }}.config")
