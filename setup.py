"""Build hook for the optional C extension; everything else is in pyproject.toml.

The extension (the readers' shortcut of ``PolicyEngine.verdict``) is optional: where no C
compiler or Python headers are found, the install goes on and the engine uses its Python code.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fqdnpolicy.engine._shortcut",
            ["fqdnpolicy/engine/_shortcut.c"],
            optional=True,
        )
    ]
)
