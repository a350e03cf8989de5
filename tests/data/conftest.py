"""Test data, not tests: nothing below is collected by this repository's pytest.

``example_backend`` is a third party's package (the one docs/backends.md shows), with its own
conftest and tests; ``tests/kernel/test_example_backend.py`` runs those in a pytest of their
own, as its author would.
"""

collect_ignore = ["example_backend"]
