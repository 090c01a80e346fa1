"""cli: the ``experiments-dagster`` command, argparse and printing; the top tier, imported by nothing."""
