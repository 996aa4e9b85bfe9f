"""The one C extension, streamvae/model/_tail.c (the fused scorer's elementwise tail).

Everything else about the package is in pyproject.toml; an extension can only be declared
here, as setuptools still calls ``[tool.setuptools.ext-modules]`` experimental and warns on
every install (tests/unit/test_packaging.py allows no warning). ``optional=True``: where no
C compiler works, the install goes on without it and the scorer uses its NumPy tail.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamvae.model._tail",
            ["streamvae/model/_tail.c"],
            optional=True,
            # -O3 for the vectoriser (some Pythons build extensions at -O2);
            # -fno-trapping-math lets it compute both sides of a select (IEEE results,
            # NaN and inf included, are unchanged: that would be -ffast-math, not used).
            extra_compile_args=["-O3", "-fno-trapping-math"],
        )
    ]
)
