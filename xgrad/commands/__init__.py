"""Subcommands of the ``xgrad`` command line, one module each."""
