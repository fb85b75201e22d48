"""The demo's entry point (work dir ``visualize.py``): the template's ``Task``, then ``demo.app.run_demo``."""

from ..demo import app
from .task import Task


def run_demo(template, load_weights, video, **options):
    """Run the demo of ``template`` (the work dir's template.yaml) on ``video`` with ``load_weights`` (a snapshot or
    an IR); ``options``: those of ``demo.app.run_demo``. Returns its ``DemoStats``."""
    return app.run_demo(Task(template), load_weights, video, **options)
