"""`python -m jsd` runs the CLI."""

from jsd_cli import main

main()
