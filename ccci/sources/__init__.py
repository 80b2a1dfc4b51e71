"""State sources: plugins (``ccci_observe``) that read what an agent CLI reports about
itself (lifecycle hooks, session files) and refine the screen's reading with it."""
