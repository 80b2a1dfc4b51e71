"""Builtin remediations and reporters: ordinary plugins implementing
``ccci_choose_remedy``, ``ccci_run_remedy`` and ``ccci_report_event``."""
