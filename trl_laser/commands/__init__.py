"""Subcommands of the `trl-laser` console script (see `trl_laser.cli`)."""
