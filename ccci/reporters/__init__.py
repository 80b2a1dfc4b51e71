"""Builtin reporters: ordinary plugins implementing ``ccci_report_event`` (notifications,
the event echo of ``ccci watch``)."""
