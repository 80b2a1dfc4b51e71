"""Builtin health checks: one module per signal, each an ordinary plugin implementing
``ccci_check_agent`` or ``ccci_check_fleet`` (see :mod:`ccci.hookspecs`)."""
