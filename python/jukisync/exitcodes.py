"""Exit codes of the `jukisync` command; each means one thing, for scripts and operators."""

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # the job ran but its outcome is bad (e.g. the demo did not converge)
    USAGE = 2  # bad flags or arguments (click's own code)
    CONFIG = 3  # a config or key file is missing or invalid
    INPUT = 4  # input data rejected (some lines of a file were invalid)
    NOT_FOUND = 5  # the record, entry or store asked for does not exist
    DENIED = 6  # a query refused by policy
    UNAVAILABLE = 7  # broker or peer unreachable
