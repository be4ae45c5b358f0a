"""The benchmarks' fixtures and summary hook live in `benchfixtures` (checked by mypy,
which cannot hold two modules named `conftest`); pytest finds them here."""

from benchfixtures import *  # noqa: F403
from benchfixtures import (  # noqa: F401  (hooks: by name)
    pytest_benchmark_update_json,
    pytest_benchmark_update_machine_info,
    pytest_sessionstart,
    pytest_terminal_summary,
)
