"""The C extensions: streamvae/model/_tail.c (the fused scorer's elementwise tail),
streamvae/kafka/_records.c (a Kafka record batch's records in one call) and
streamvae/core/_jsonrecord.c (the common record's JSON in one call).

Everything else about the package is in pyproject.toml; an extension can only be declared
here, as setuptools still calls ``[tool.setuptools.ext-modules]`` experimental and warns on
every install (tests/unit/test_packaging.py allows no warning). ``optional=True``: where no
C compiler works, the install goes on without them: the scorer uses its NumPy tail,
kafka-python reads the records itself and every record's JSON takes the Python path.
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
        ),
        Extension("streamvae.kafka._records", ["streamvae/kafka/_records.c"], optional=True, extra_compile_args=["-O2"]),
        Extension("streamvae.core._jsonrecord", ["streamvae/core/_jsonrecord.c"], optional=True,
                  extra_compile_args=["-O2"]),
    ]
)
