"""The Dockerfile (Containerfile) language, parsed: no I/O, no store, unit-testable.

* **Lines**: parser directives at the very top (``# escape=`` (``\\`` or a backtick),
  ``# syntax=`` and ``# check=`` accepted and ignored); then comment lines (``#`` as the
  first non-blank character) are dropped, also inside a continued instruction; the escape
  character at the end of a line (blanks after it allowed) continues the instruction on
  the next line, which is appended as written (its leading blanks kept), as BuildKit does.
* **Instructions**: the keyword (any case), leading ``--name=value`` flags (only those the
  instruction knows; anything else is an error naming the line), and the rest, kept
  unsubstituted: substitution needs the build's ENV and ARG values, so the builder does
  it per instruction with :func:`substitute`/:func:`substitute_words`, on exactly the
  instructions Docker substitutes (:data:`SUBSTITUTED`).
* **Stages**: ``ARG`` before the first ``FROM`` are the meta args (FROM may use them);
  each ``FROM image [AS name]`` starts a stage.
* :func:`exec_form`: the JSON-array form of RUN/CMD/ENTRYPOINT/SHELL/COPY/ADD/VOLUME
  (anything that is not a JSON array of strings is the shell form, as in Docker).
* :class:`IgnoreRules`: ``.dockerignore`` with Docker's pattern rules (moby/patternmatcher):
  ``filepath.Match`` globs, ``**`` for any number of directories, ``!`` exceptions (the
  last matching pattern decides), a match of a parent directory covering its contents.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from minirun.errors import DockerfileError

# What minirun builds (HEALTHCHECK, ONBUILD, MAINTAINER: metadata, as in Docker).
KEYWORDS = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
            "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
            "HEALTHCHECK", "SHELL")
# Docker's "replaceEnvAllowed" set: the instructions whose arguments see $VAR substitution
# (RUN, CMD and ENTRYPOINT are left to the shell in the container).
SUBSTITUTED = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL",
                         "USER", "VOLUME", "WORKDIR", "ARG"})
# The flags each instruction takes (values after '='; a bare --link is "true").
FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link"}),
    "RUN": frozenset({"network", "mount", "security"}),
}
_DIRECTIVE = re.compile(r"#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_FLAG = re.compile(r"--([a-z][a-z-]*)(?:=(.*))?$")


@dataclass(frozen=True)
class Instruction:
    """One instruction. ``args``: what follows the keyword and its flags, unsubstituted."""

    keyword: str  # upper case
    args: str
    line: int  # 1-based number of its first line
    original: str  # the logical line as written (continuations joined)
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        return exec_form(self.args)

    def __str__(self) -> str:
        flags = "".join(f"--{k}={v} " if v != "" else f"--{k} " for k, v in self.flags.items())
        return f"{self.keyword} {flags}{self.args}".rstrip()


@dataclass
class Stage:
    """``FROM base [AS name]`` and the instructions up to the next FROM."""

    index: int
    base: str  # unsubstituted
    name: str | None
    line: int
    from_instruction: Instruction
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How progress names it: its name, or ``stage-N``."""
        return self.name or f"stage-{self.index}"


@dataclass
class Dockerfile:
    escape: str
    meta_args: list[Instruction]
    stages: list[Stage]

    def stage(self, ref: str) -> Stage | None:
        """A stage by name (case-insensitive) or index, or None."""
        ref_l = ref.lower()
        for s in self.stages:
            if s.name == ref_l:
                return s
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


def exec_form(args: str) -> list[str] | None:
    """The exec (JSON array of strings) form, or None for the shell form."""
    text = args.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _logical_lines(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The escape character and the instructions' logical lines (first line number, text)."""
    lines = text.replace("\r\n", "\n").split("\n")
    escape = "\\"
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            break
        name, value = m.group(1).lower(), m.group(2)
        if name in seen:
            raise DockerfileError(f"line {i + 1}: only one {name} parser directive can be used")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"line {i + 1}: invalid escape token {value!r} "
                                      "does not validate (must be \\ or `)")
            escape = value
        i += 1
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[tuple[int, str]] = []
    pieces: list[str] = []
    start = 0
    for n in range(i, len(lines)):
        raw = lines[n]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines go, also inside a continued instruction
        if not pieces:
            start = n + 1
            raw = raw.lstrip()
        m = continuation.search(raw)
        if m:
            pieces.append(raw[:m.start()])
            continue
        pieces.append(raw)
        out.append((start, "".join(pieces).strip()))
        pieces = []
    if pieces and "".join(pieces).strip():
        out.append((start, "".join(pieces).strip()))
    return escape, out


def _instruction(line_no: int, text: str) -> Instruction:
    m = re.match(r"(\S+)[ \t]*(.*)", text, re.S)
    assert m is not None  # text is not blank
    word = m.group(1)
    keyword = word.upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(f"line {line_no}: unknown instruction: {word} "
                              f"(minirun build knows {', '.join(KEYWORDS)})")
    rest = m.group(2).strip()
    flags: dict[str, str] = {}
    allowed = FLAGS.get(keyword, frozenset())
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        fm = _FLAG.match(word)
        if fm is None or fm.group(1) not in allowed:
            hint = f" ({keyword} takes {', '.join('--' + f for f in sorted(allowed))})" if allowed else ""
            raise DockerfileError(f"line {line_no}: unknown flag: {word.partition('=')[0]}{hint}")
        if fm.group(1) in flags:
            raise DockerfileError(f"line {line_no}: duplicate flag specified: --{fm.group(1)}")
        flags[fm.group(1)] = fm.group(2) if fm.group(2) is not None else ""
        rest = after.strip()
    return Instruction(keyword, rest, line_no, text, flags)


def parse(text: str) -> Dockerfile:
    """The whole file; DockerfileError (naming the line) for anything malformed."""
    if "\x00" in text:
        raise DockerfileError("the Dockerfile holds a NUL byte: it is not a text file")
    escape, lines = _logical_lines(text)
    meta: list[Instruction] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for line_no, raw in lines:
        ins = _instruction(line_no, raw)
        _check(ins)
        if ins.keyword == "FROM":
            base, name = _from_args(ins)
            if name is not None:
                if name in names:
                    raise DockerfileError(f"line {line_no}: duplicate stage name {name!r}")
                names.add(name)
            stages.append(Stage(len(stages), base, name, line_no, ins))
        elif not stages:
            if ins.keyword != "ARG":
                raise DockerfileError(f"line {line_no}: {ins.keyword} comes before the first FROM "
                                      "(only ARG may: every other instruction belongs to a stage)")
            meta.append(ins)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction (a build needs at least one stage)")
    return Dockerfile(escape, meta, stages)


def _from_args(ins: Instruction) -> tuple[str, str | None]:
    words = ins.args.split()
    if len(words) == 1:
        return words[0], None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise DockerfileError(f"line {ins.line}: invalid name for build stage: {words[2]!r} "
                                  "(letters, digits, '-', '_' and '.', starting with a letter)")
        return words[0], name
    raise DockerfileError(f"line {ins.line}: FROM takes IMAGE [AS NAME], not {ins.args!r}")


_NEED_ARGS = ("RUN", "CMD", "ENTRYPOINT", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "VOLUME",
              "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER")


def _check(ins: Instruction) -> None:
    """What is wrong whatever the build's values: missing arguments, bad forms."""
    k = ins.keyword
    if k in _NEED_ARGS and not ins.args:
        raise DockerfileError(f"line {ins.line}: {k} requires at least one argument")
    if k == "SHELL" and not exec_form(ins.args):
        raise DockerfileError(f"line {ins.line}: SHELL requires the arguments to be in JSON form "
                              '(SHELL ["/bin/sh", "-c"])')
    if k in ("COPY", "ADD"):
        form = exec_form(ins.args)
        parts = form if form is not None else ins.args.split()
        if len(parts) < 2:
            raise DockerfileError(f"line {ins.line}: {k} requires at least two arguments "
                                  "(SOURCE... DEST), but got " + repr(ins.args))
    if k in ("WORKDIR", "USER", "STOPSIGNAL") and len(ins.args.split()) != 1:
        raise DockerfileError(f"line {ins.line}: {k} requires exactly one argument")
    if k == "RUN":
        if "mount" in ins.flags:
            raise DockerfileError(f"line {ins.line}: RUN --mount is not supported by minirun build")
        if "security" in ins.flags:
            raise DockerfileError(f"line {ins.line}: RUN --security is not supported by minirun build")
        net = ins.flags.get("network")
        if net is not None and net not in ("default", "none", "host"):
            raise DockerfileError(f"line {ins.line}: RUN --network={net}: want default, none or host")
    if k == "COPY" and ins.flags.get("from") == "":
        raise DockerfileError(f"line {ins.line}: COPY --from needs a stage name, index or image")


# -- substitution ---------------------------------------------------------------------------


def substitute(word: str, env: dict[str, str], escape: str = "\\") -> str:
    """One word as Docker's shell lexer reads it: quotes removed, escapes, ``$V``, ``${V}``,
    ``${V:-x}``, ``${V-x}``, ``${V:+x}``, ``${V+x}``, ``${V:?msg}``; unset variables are
    empty. With ``# escape=``` the backtick is the escape character and ``\\`` is plain."""
    from minirun.errors import UsageError
    from minirun.image.commit import expand

    if escape == "`":
        word = word.replace("\\", "\\\\").replace("`", "\\")
    try:
        return expand(word, env)
    except UsageError as e:
        raise DockerfileError(str(e)) from None


def split_words(text: str) -> list[str]:
    """Whitespace-separated words with their quotes and escapes still in them."""
    from minirun.image.commit import parse_words

    return parse_words(text)


def substitute_words(text: str, env: dict[str, str], escape: str = "\\") -> list[str]:
    """Split into words (quotes respected), then substitute each (COPY/ADD sources, EXPOSE...)."""
    return [substitute(w, env, escape) for w in split_words(text)]


def name_values(ins: Instruction, env: dict[str, str], escape: str = "\\") -> list[tuple[str, str]]:
    """ENV/LABEL/ARG ``KEY=VALUE ...`` (or the legacy ``KEY VALUE`` of ENV and LABEL),
    substituted."""
    words = split_words(ins.args)
    if ins.keyword != "ARG" and words and "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", ins.args, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"line {ins.line}: {ins.keyword} must have two arguments")
        return [(substitute(parts[0], env, escape), substitute(parts[1], env, escape))]
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq and ins.keyword != "ARG":
            raise DockerfileError(f"line {ins.line}: syntax error - can't find = in {w!r}. "
                                  "Must be of the form: name=value")
        key = substitute(key, env, escape)
        if not key:
            raise DockerfileError(f"line {ins.line}: {ins.keyword} names can not be blank")
        out.append((key, substitute(value, env, escape) if eq else "\x00"))
    return out


UNSET = "\x00"  # name_values' value of ``ARG NAME`` (no default)


# -- .dockerignore --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool  # a "!" pattern: re-includes
    regex: re.Pattern[str]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """patternmatcher's compile: ``**`` any number of path elements, ``*``/``?`` within
    one, ``[...]`` classes, ``\\`` escapes the next character."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                    out.append("(.*/)?")  # "**/" : zero or more directories
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise DockerfileError(f".dockerignore: syntax error in pattern {pattern!r}")
            body = pattern[i + 1:end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.S)


class IgnoreRules:
    """The patterns of a ``.dockerignore``; :meth:`excluded` tells a context path's fate."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            if not line:
                continue
            cleaned = posixpath.normpath(line).lstrip("/")
            if cleaned in ("", "."):
                cleaned = "."  # "/" or ".": the whole context
            self.patterns.append(_Pattern(cleaned, exclusion, _glob_regex(cleaned)))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        return cls(text.splitlines())

    def excluded(self, rel: str) -> bool:
        """``rel``: a path relative to the context root (``a/b.txt``)."""
        rel = posixpath.normpath(rel).lstrip("/")
        parents = []
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parents.append("/".join(parts[:i]))
        matched = False
        for p in self.patterns:
            if p.text == ".":
                hit = True
            else:
                hit = bool(p.regex.match(rel)) or any(p.regex.match(d) for d in parents)
            if hit:
                matched = not p.exclusion
        return matched

    def may_hold_included(self, rel: str) -> bool:
        """Whether an excluded directory ``rel`` may still hold a re-included path (so a walk
        must enter it)."""
        return self.has_exceptions

    def __bool__(self) -> bool:
        return bool(self.patterns)
