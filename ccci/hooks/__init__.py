"""Builtin remediation hooks: ordinary plugins implementing ``ccci_run_remedy`` (restart,
send and ping, wait, escalate)."""
