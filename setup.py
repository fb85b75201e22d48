"""Legacy entry point: ``pip install -e .`` works with or without PEP 660 (the metadata is in pyproject.toml)."""

from setuptools import setup

setup()
