"""How remote commands answer: ``--json`` prints the API's JSON, otherwise text and tables on stdout.

Problems go to stderr as ``error: <title>: <detail>`` with one line per refused field or row, and each
problem type has a fixed exit code so scripts can tell "bad input" from "not there" from "not allowed".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click

from jsd_cli.client import ApiProblem

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OTHER = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5

EXIT_CODES = {
    "invalid-request": EXIT_INVALID,
    "import-failed": EXIT_INVALID,
    "payload-too-large": EXIT_INVALID,
    "not-found": EXIT_NOT_FOUND,
    "unauthenticated": EXIT_AUTH,
    "forbidden": EXIT_AUTH,
    "conflict": EXIT_REFUSED,
    "claim-failed": EXIT_REFUSED,
    "rate-limited": EXIT_REFUSED,
    "already-exported": EXIT_REFUSED,
}


def json_option(func: F) -> F:
    """The ``--json`` flag every remote command has."""
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")(func)


def exit_code(problem: ApiProblem) -> int:
    return EXIT_CODES.get(problem.problem, EXIT_OTHER)


def problem_lines(problem: ApiProblem) -> list[str]:
    """The readable form: a headline, then each refused row or field (``line 3: app_key: reason``)."""
    lines = [f"error: {problem}"]
    for entry in problem.errors:
        where = [f"line {entry['line']}"] if entry.get("line") is not None else []
        if entry.get("field"):
            where.append(str(entry["field"]))
        text = ": ".join([*where, str(entry.get("reason", ""))])
        if text != problem.detail:  # a single field error is often the detail itself
            lines.append("  " + text)
    shown = len(problem.errors)
    if problem.error_count is not None and problem.error_count > shown:
        lines.append(f"  ... {problem.error_count - shown} more")
    if problem.retry_after:
        lines.append(f"  retry after {problem.retry_after} s")
    return lines


def fail(problem: ApiProblem) -> click.exceptions.Exit:
    """Print a problem to stderr; the caller raises the returned exit."""
    for line in problem_lines(problem):
        click.echo(line, err=True)
    return click.exceptions.Exit(exit_code(problem))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Left-aligned columns (``(header, key)`` pairs); the last column is not padded."""
    cells = [[header for header, _ in columns]]
    cells += [[cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for r in cells:
        out.append("  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)), r[-1]]).rstrip())
    return "\n".join(out)


def fields(data: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """``key: value`` lines, for one object."""
    chosen = keys if keys is not None else list(data)
    width = max((len(k) for k in chosen), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {cell(data.get(k))}" for k in chosen)


DEVICE_COLUMNS = (
    ("DEV_EUI", "dev_eui"),
    ("JOIN_EUI", "join_eui"),
    ("MAC", "mac_version"),
    ("STATE", "state"),
    ("OWNER", "owner"),
    ("NET_ID", "home_net_id"),
    ("ASTK", "astk"),
    ("NAME", "name"),
)
