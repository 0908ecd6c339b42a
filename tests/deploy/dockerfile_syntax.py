"""A small Dockerfile and .dockerignore reader for the image tests (no Docker engine here).

Written rather than taken from PyPI: the pure-Python `dockerfile-parse` has had no commit since
2023, and `dockerfile` wraps BuildKit's Go parser in a compiled extension. This covers what the
project's Dockerfile uses: comments, parser directives, line continuations, global ARGs and their
${VAR} / $VAR substitution in FROM, exec-form (JSON) and shell-form arguments, stages and flags.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_DIRECTIVE = re.compile(r"^#\s*[a-zA-Z]+\s*=")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Instruction:
    """One instruction: its keyword (upper case), raw arguments and first line number."""

    keyword: str
    raw: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form RUN/CMD/ENTRYPOINT, or None for the shell form."""
        text = self.raw.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker runs a malformed array in a shell: it is shell form
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """`--from=build a b` -> ({'from': 'build'}, ['a', 'b']) for COPY, ADD and FROM."""
        flags: dict[str, str] = {}
        args: list[str] = []
        words = self.exec_form() or shlex.split(self.raw)
        for word in words:
            if word.startswith("--") and not args:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                args.append(word)
        return flags, args


@dataclass
class Stage:
    """A build stage: its FROM image (ARGs substituted), its name and its instructions."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV key=value pairs set in this stage (the `ENV key value` legacy form too)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.raw)
            if words and "=" not in words[0]:
                values[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                values[key] = value
        return values


def instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continued lines and dropping comments."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    at_top = True
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if at_top and _DIRECTIVE.match(stripped):
            continue  # a parser directive such as "# syntax=...", only before anything else
        at_top = False
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(part.strip() for part in pending if part.strip())
        pending = []
        keyword, _, raw = joined.partition(" ")
        result.append(Instruction(keyword.upper(), raw.strip(), start))
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return result


def substitute(text: str, variables: dict[str, str]) -> str:
    """Expand $VAR and ${VAR} (unknown names become empty, as Docker does)."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def stages(text: str) -> list[Stage]:
    """The build stages, with the global ARG defaults substituted into each FROM."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            _, args = instruction.flags_and_args()
            image = substitute(args[0], global_args)
            name = args[2] if len(args) >= 3 and args[1].upper() == "AS" else None
            result.append(Stage(image, name))
        elif not result:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before the first FROM")
            key, _, value = instruction.raw.partition("=")
            global_args[key.strip()] = value.strip().strip('"')
        else:
            result[-1].instructions.append(instruction)
    return result


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` keep `path` (relative, '/'-separated) out of the context.

    Docker's rules: patterns in order, the last match wins, '!' lets a path back in, and a
    pattern that matches a parent directory matches everything under it. `*` here also crosses
    '/', which is looser than Go's filepath.Match but exact for the patterns this project uses.
    """
    excluded = False
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern[1:] if negated else pattern
        cleaned = cleaned.strip().strip("/")
        if not cleaned:
            continue
        if any(fnmatch.fnmatchcase(candidate, cleaned) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerignore_patterns(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
