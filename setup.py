"""The compiled screen (`controparte.dns._screen`), optional: without a C compiler, or
with CONTROPARTE_PURE=1 (`make dist`: one wheel for every platform the agent runs on),
the package is pure Python and `controparte.dns.screen` serves with its own walk.
Everything else about the package is in pyproject.toml."""

import os

from setuptools import Extension, setup

compiled = [
    Extension(
        "controparte.dns._screen",
        ["src/controparte/dns/_screen.c"],
        optional=True,
    )
]

setup(ext_modules=[] if os.environ.get("CONTROPARTE_PURE") else compiled)
