"""Errors that reach the user as one line: the problem and the fix."""


class DDPMLabError(Exception):
    """A mistake in what the user asked for (exit code 2)."""

    exit_code = 2


class ConfigError(DDPMLabError):
    """A bad preset, config file or --set override."""


class DataError(DDPMLabError):
    """A dataset that cannot be found, read or downloaded."""


class RunError(DDPMLabError):
    """A run directory that is missing, incomplete or does not match its config."""
