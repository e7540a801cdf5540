"""docs/cli.md's command tree names every visible command of ``jsd`` and no other, and the old names stay hidden."""

from __future__ import annotations

import re
from pathlib import Path

import click

from jsd_cli import main

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> dict[str, set[str]]:
    """Top-level commands of the tree block, each with the subcommand words its lines name."""
    text = (ROOT / "docs" / "cli.md").read_text()
    block = text[text.index("```\njsd [") + 4 : text.index("```", text.index("```\njsd [") + 4)]
    tree: dict[str, set[str]] = {}
    for line in block.splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        command, rest = words[0], " ".join(words[1:])
        # subcommands: the first word, and each word after " | ", when it is a plain lowercase name
        candidates = [rest.split()[0]] if rest else []
        candidates += [part.split()[0] for part in rest.split(" | ")[1:] if part.split()]
        tree.setdefault(command, set()).update(w for w in candidates if re.fullmatch(r"[a-z][a-z-]+", w))
    return tree


def test_docs_cli_tree_is_the_command_tree() -> None:
    documented = _documented()
    context = click.Context(main)
    commands = {name: main.get_command(context, name) for name in main.list_commands(context)}
    visible = {name for name, command in commands.items() if command is not None and not command.hidden}
    assert set(documented) == visible
    for name, words in documented.items():
        group = commands[name]
        if isinstance(group, click.Group) and name not in ("sim",):
            assert words <= set(group.commands), (name, words - set(group.commands))
    assert {"account", "device", "astk"} <= {name for name, command in commands.items() if command and command.hidden}
