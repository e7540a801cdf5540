"""How commands answer: ``--json`` prints the API's JSON, otherwise text and tables on stdout.

Problems go to stderr as ``error: <title>: <detail>`` with one line per refused field or row, and each
problem type has a fixed exit code so scripts can tell "bad input" from "not there" from "not allowed".
Under ``--json`` the problem (RFC 7807, the API's own object when it sent one) is also printed on stdout,
so a script reading stdout always gets one JSON document. Warnings go to stderr as ``warning: ...``.
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

JSON_MODE = False
"""Set by the root command when ``--json`` is on the command line: problems are then printed as JSON too."""

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


def problem_document(problem: ApiProblem) -> dict[str, Any]:
    """The RFC 7807 object: the API's own when it sent one, else one made from what the CLI knows."""
    if problem.body:
        return dict(problem.body)
    document: dict[str, Any] = {"type": f"urn:jsd:problem:{problem.problem}", "title": problem.title}
    if problem.status:
        document["status"] = problem.status
    if problem.detail:
        document["detail"] = problem.detail
    if problem.errors:
        document["errors"] = problem.errors
    return document


def fail(problem: ApiProblem) -> click.exceptions.Exit:
    """Print a problem to stderr (and as JSON on stdout under --json); the caller raises the returned exit."""
    for line in problem_lines(problem):
        click.echo(line, err=True)
    if JSON_MODE:
        print_json(problem_document(problem))
    return click.exceptions.Exit(exit_code(problem))


def fail_cli(message: str, problem: str = "error", code: int | None = None) -> click.exceptions.Exit:
    """A problem found by the CLI itself (bad option, unreadable file, daemon unreachable), printed as ``fail``."""
    found = ApiProblem(status=0, problem=problem, title=message)
    exit_ = fail(found)
    return exit_ if code is None else click.exceptions.Exit(code)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


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
