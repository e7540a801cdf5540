"""`python -m jsd` runs the ``jsd`` command.

The command lives in the separate ``jsd_cli`` package, which depends on the daemon, never the other way round;
so this module does not import it by name but loads whatever the installed ``jsd`` console script names
(pyproject's ``[project.scripts]``), the same entry point the ``jsd`` executable runs.
"""

from importlib.metadata import entry_points


def main() -> None:
    """Run the ``jsd`` console script's entry point; say so plainly if it is not installed."""
    found = entry_points(group="console_scripts", name="jsd")
    if not found:
        raise SystemExit("error: the jsd command is not installed (pip install jsd)")
    next(iter(found)).load()()


if __name__ == "__main__":
    main()
