"""Celery tasks and the app that runs them.

`celery --app={{ cookiecutter.project_slug }}` finds `app` here.
"""

from .celery import app

__all__ = ["app"]
