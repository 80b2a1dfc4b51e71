"""``python -m ccci`` is ``ccci``."""
from ccci.cli import main

main()
