"""``python -m ccci`` is ``ccci``."""
from ccci.commands.cli import main

main()
