"""One root error, grouped by what the operator does about it; one place maps them to exit codes."""

from __future__ import annotations

EXIT_RECONCILED = 0
EXIT_NOT_RECONCILED = 1
EXIT_BAD_INPUT = 2
EXIT_GATE = 3


class MigrationError(Exception):
    """Root of every error the tool raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class ConfigurationError(MigrationError):
    """A command-line option, mapping file, resolution file or URL is wrong."""


class InputError(MigrationError):
    """The legacy extract cannot be read. Names the file (or table), the line (or key) and the problem."""

    def __init__(self, source: str, location: str | None, problem: str) -> None:
        self.source = source
        self.location = location
        self.problem = problem
        where = f"{source}, {location}" if location else source
        super().__init__(f"{where}: {problem}")


class TargetBusyError(MigrationError):
    """Another run holds the target."""


class GateError(MigrationError):
    """A validation threshold was exceeded: the run stopped before loading anything."""

    exit_code = EXIT_GATE
