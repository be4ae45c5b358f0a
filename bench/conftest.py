"""The benchmarks' fixtures and summary hook live in `benchfixtures` (checked by mypy,
which cannot hold two modules named `conftest`); pytest finds them here."""

from benchfixtures import *  # noqa: F403
from benchfixtures import pytest_terminal_summary  # noqa: F401  (a hook: by name)
