"""cli: the ``experiments-dagster`` command, argparse and printing. Imports any tier; no tier imports it."""
