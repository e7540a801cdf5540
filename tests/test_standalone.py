"""The repository stands alone: nothing in it reads or cites a file that a user of the checkout does not have.

A clone holds the code, the tests, their data (tests/vectors/) and the docs. A relative path that climbs out of
the checkout, a Path(__file__) parent above the repository root, or a citation of a Markdown file that is not in
the repository would work on a developer's machine with other directories beside the checkout and fail, or
mislead, everywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".json", ".ini", ".cfg", ".txt", ".conf", ".acl",
                 ".lua", ".sql", ".mako", ".example"}
TEXT_NAMES = {"Dockerfile", "run", ".gitignore"}
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache",
             "node_modules"}

# Reference notes that exist only beside some developers' checkouts; a citation must name a file in the repository.
NOTE_NAMES = ("hsm", "lbi", "chirpstack", "anchors", "aesthetics")
# The notes directory some developers keep beside the checkout; spelled in two parts so that this file, which
# must name it to look for it, is not itself a file that cites it.
NOTES_DIR = "shar" + "ed"
OUTSIDE_DIR = re.compile(
    rf"(?<![\w-])(?:\.\./)*{NOTES_DIR}/|[\"'/]{NOTES_DIR}[\"']|(?<![\w.-])/(?:work|home)/\w"
)
MARKDOWN_REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]*)")
PARENTS = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent(?!s))*)(?:\.parents\[(\d+)\])?((?:\.parent(?!s))*)")


def repository_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if not path.is_file() or path == SELF:
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            yield path


FILES = list(repository_files())


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)


def test_the_scan_sees_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "jsd/hsm/_token.py", "tests/vectors/README.md", "docker/compose.yaml"} <= names


def problems_in(path: Path, line: str) -> list[str]:
    """What in one line of `path` points outside the checkout or at a document the repository does not have."""
    found: list[str] = []
    here = path.parent
    if OUTSIDE_DIR.search(line):
        found.append("names a directory beside the checkout or on a developer's machine")
    for match in MARKDOWN_REF.finditer(line):
        ref = match.group(1)
        if "/" not in ref and ref.removesuffix(".md") in NOTE_NAMES and not (here / ref).exists():
            found.append(f"cites {ref}, which is not in the repository (cite docs/... or the public source)")
        elif "/" in ref and not ((ROOT / ref).exists() or (here / ref).exists()):
            found.append(f"cites {ref}, which does not exist in the repository")
    for match in CLIMB.finditer(line):
        if not (here / (match.group(1) + match.group(2))).resolve().is_relative_to(ROOT):
            found.append(f"{match.group(0)!r} leaves the checkout")
    if path.suffix == ".py":
        for match in PARENTS.finditer(line):
            before, index, after = match.groups()
            level = before.count(".parent") + after.count(".parent") + (int(index) + 1 if index else 0)
            if level > len(path.relative_to(ROOT).parts):  # that many levels up from the file is ROOT itself
                found.append(f"Path(__file__) climbs {level} levels, above the repository root")
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_reference_outside_the_checkout(path: Path) -> None:
    problems = [f"{number}: {problem}" for number, line in _lines(path) for problem in problems_in(path, line)]
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        f'VECTORS = Path(__file__).resolve().parents[2].parent / "{NOTES_DIR}" / "vectors" / "join-vectors.json"',
        "ROOT = Path(__file__).parents[3]",
        f"Known values come from ../{NOTES_DIR}/vectors/join-vectors.json",
        "token objects are slow (hsm.md §3.1)",
        "as chirpstack.md records them",
        "as docs/nowhere.md records",
        'open("../../../etc/passwd")',
        'VECTORS = Path("/work/vectors/join-vectors.json")',
    ],
)
def test_the_scan_catches_what_it_is_for(line: str) -> None:
    assert problems_in(ROOT / "tests" / "lorawan" / "a_module.py", line), line


@pytest.mark.parametrize(
    "line",
    [
        'ROOT = Path(__file__).resolve().parents[2] / "conf"',
        "see docs/pkcs11.md §3 and README.md",
        "- ../../conf/chirpstack/jsd.toml:/etc/jsd/jsd.toml:ro",
        "the shared broker on 127.0.0.1:1883",
    ],
)
def test_the_scan_lets_the_repository_be(line: str) -> None:
    assert not problems_in(ROOT / "tests" / "lorawan" / "a_module.py", line), line


def _help_texts() -> Iterator[tuple[str, str]]:
    """The --help text of every ``jsd`` command and group, plugins included, as a user sees it."""
    import click

    from jsd_cli import main

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> Iterator[tuple[str, str]]:
        context = click.Context(command, info_name=path[-1], parent=parent)
        yield " ".join(path), command.get_help(context)
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                if sub is not None:
                    yield from walk(sub, [*path, name], context)

    yield from walk(main, ["jsd"], None)


def test_every_repository_path_a_help_text_names_exists() -> None:
    named: dict[str, list[str]] = {}
    texts = list(_help_texts())
    assert {"jsd chirpstack run", "jsd chirpstack appserver", "jsd astks create"} <= {name for name, _ in texts}
    for name, text in texts:
        for path in re.findall(r"\b((?:conf|docs|docker|scripts|bench)/[\w./-]*\w)", " ".join(text.split())):
            named.setdefault(path, []).append(name)
    assert "conf/chirpstack/bridge.toml" in named and "conf/chirpstack/appserver.toml" in named
    missing = {path: commands for path, commands in named.items() if not (ROOT / path).exists()}
    assert not missing, f"help texts name files the repository does not have: {missing}"
