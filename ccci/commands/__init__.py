"""The commands: the ``ccci`` command line (:mod:`ccci.commands.cli`), ``ccci init``
(:mod:`ccci.commands.init`), ``ccci demo`` (:mod:`ccci.commands.demo`) and
``ccci diagnose`` (:mod:`ccci.commands.diagnose`)."""
