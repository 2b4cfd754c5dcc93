"""The Dockerfile parser, substitution and .dockerignore rules (minirun/image/dockerfile.py)."""

from __future__ import annotations

import pytest

from minirun.errors import DockerfileError
from minirun.image import dockerfile as df


def test_stages_meta_args_and_flags() -> None:
    d = df.parse(
        "ARG BASE=busybox\n"
        "FROM ${BASE} AS Build\n"
        "RUN --network=none echo hi\n"
        "COPY --from=build --chown=1:2 /a /b\n"
        "from scratch\n"
        "copy --from=0 /x /y\n"
    )
    assert [a.args for a in d.meta_args] == ["BASE=busybox"]
    assert [(s.name, s.base) for s in d.stages] == [("build", "${BASE}"), (None, "scratch")]
    run, copy = d.stages[0].instructions
    assert run.keyword == "RUN" and run.flags == {"network": "none"} and run.args == "echo hi"
    assert copy.flags == {"from": "build", "chown": "1:2"} and copy.args == "/a /b"
    assert d.stage("BUILD") is d.stages[0] and d.stage("1") is d.stages[1]
    assert d.stages[1].label == "stage-1"


def test_continuations_comments_and_blank_lines() -> None:
    d = df.parse("FROM scratch\nRUN echo a \\\n# a comment inside\n\n    b \\  \n c\n# last\nCMD x\n")
    run, cmd = d.stages[0].instructions
    assert run.args == "echo a     b  c" and run.line == 2
    assert cmd.line == 8


def test_escape_directive() -> None:
    d = df.parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  x\n")
    assert d.escape == "`"
    assert d.stages[0].instructions[0].args == "dir c:\\   x"
    # after the first instruction a directive is a comment
    d = df.parse("FROM scratch\n# escape=`\nRUN a \\\n b\n")
    assert d.escape == "\\" and d.stages[0].instructions[0].args == "a  b"
    with pytest.raises(DockerfileError, match="escape"):
        df.parse("# escape=x\nFROM scratch\n")


def test_exec_form() -> None:
    assert df.exec_form('["sh", "-c", "x"]') == ["sh", "-c", "x"]
    assert df.exec_form("[not json") is None
    assert df.exec_form('[1, 2]') is None
    assert df.exec_form("echo hi") is None


@pytest.mark.parametrize(("text", "message"), [
    ("FROM scratch\nBOGUS x\n", "line 2: unknown instruction: BOGUS"),
    ("RUN echo\n", "line 1: RUN comes before the first FROM"),
    ("", "no FROM"),
    ("# only a comment\n", "no FROM"),
    ("FROM scratch\nCOPY --frm=a b c\n", "line 2: unknown flag: --frm"),
    ("FROM scratch\nCOPY a\n", "line 2: COPY requires at least two arguments"),
    ("FROM scratch\nRUN --mount=type=cache x\n", "RUN --mount is not supported"),
    ("FROM a AS x\nFROM b AS x\n", "duplicate stage name"),
    ("FROM a AS 1bad\n", "invalid name for build stage"),
    ("FROM a b c d\n", "FROM takes IMAGE"),
    ("FROM scratch\nSHELL /bin/sh\n", "JSON form"),
    ("FROM scratch\nWORKDIR\n", "WORKDIR requires at least one argument"),
    ("FROM scratch\nUSER a b\n", "USER requires exactly one argument"),
    ("FROM scratch\nRUN x\x00\n", "NUL"),
])
def test_hostile_or_malformed_input(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        df.parse(text)


def test_substitution_forms() -> None:
    env = {"A": "x", "E": ""}
    s = df.substitute
    assert s("$A/${A}", env) == "x/x"
    assert s("${NOPE:-dflt} ${E:-empty} ${E-set}", env) == "dflt empty "
    assert s("${A:+alt} ${NOPE:+alt}|", env) == "alt |"
    assert s("'$A' \"$A\" \\$A", env) == "$A x $A"
    assert s("$NOPE", env) == ""
    with pytest.raises(DockerfileError, match="NOPE"):
        s("${NOPE:?must be set}", env)
    with pytest.raises(DockerfileError):
        s("${A", env)
    # with the backtick as escape, a backslash is plain text
    assert s("c:\\dir `$A", env, "`") == "c:\\dir $A"


def test_name_values() -> None:
    ins = df.parse('FROM scratch\nENV A=1 B="two words" C=$A\n').stages[0].instructions[0]
    assert df.name_values(ins, {"A": "0"}) == [("A", "1"), ("B", "two words"), ("C", "0")]
    legacy = df.parse("FROM scratch\nENV A value with spaces\n").stages[0].instructions[0]
    assert df.name_values(legacy, {}) == [("A", "value with spaces")]
    arg = df.parse("FROM scratch\nARG X Y=2\n").stages[0].instructions[0]
    assert df.name_values(arg, {}) == [("X", df.UNSET), ("Y", "2")]
    with pytest.raises(DockerfileError, match="can't find ="):
        df.name_values(df.parse("FROM scratch\nLABEL a=1 b\n").stages[0].instructions[0], {})


def test_substitute_words_keeps_quoted_spaces() -> None:
    assert df.substitute_words('"a b" $X c', {"X": "y"}) == ["a b", "y", "c"]


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),  # '*' never crosses '/'
    (["**/*.log"], "dir/sub/a.log", True),
    (["**/*.log"], "a.log", True),
    (["dir"], "dir/deep/file", True),  # a parent's match covers its contents
    (["/dir/"], "dir/x", True),
    (["./dir"], "dir/x", True),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["*.md", "!README.md", "README*"], "README.md", True),  # the last match decides
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[!a]x"], "ax", False),
    (["# comment", ""], "# comment", False),
    (["node_modules/**"], "node_modules/x/y", True),
    (["**"], "anything/at/all", True),
    (["dir/**/x"], "dir/x", True),
    (["dir/**/x"], "dir/a/b/x", True),
])
def test_dockerignore(patterns: list[str], path: str, excluded: bool) -> None:
    assert df.IgnoreRules(patterns).excluded(path) is excluded


def test_dockerignore_exceptions_flag() -> None:
    assert df.IgnoreRules(["a", "!a/b"]).has_exceptions
    assert not df.IgnoreRules(["a"]).has_exceptions
    assert not df.IgnoreRules(["# x", "  "])
