"""Builtin backends, registered through ``ccci_register_backends`` like any plugin."""
