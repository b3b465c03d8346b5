"""The one build step pyproject.toml cannot state stably: perfkit's optional C extension.

The compute() window in C (perfkit/timing/window.py explains why). ``optional=True``: without a
C compiler the install still succeeds and perfkit uses the same window written in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("perfkit.timing._cwindow", sources=["perfkit/timing/_cwindow.c"], optional=True)
    ]
)
