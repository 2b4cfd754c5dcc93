"""``--change`` of commit and import: Dockerfile instructions applied to an image config
the way Docker's BuildFromConfig applies them (no root needed)."""

from __future__ import annotations

from typing import Any

import pytest

from minirun.errors import UsageError
from minirun.image.commit import (
    apply_changes,
    expand,
    merge_container_config,
    parse_changes,
    parse_duration,
    parse_tag,
    parse_words,
)

BASE: dict[str, Any] = {"Env": ["PATH=/usr/bin:/bin", "HOME=/root"], "Cmd": ["sh"], "WorkingDir": "/app"}


def test_parse_changes_lines_continuations_and_comments() -> None:
    got = parse_changes(["env A=1", "# a comment\n\nCMD echo \\\n   hi", "  LABEL  x=y  "])
    assert [(i.keyword, i.rest) for i in got] == [("ENV", "A=1"), ("CMD", "echo hi"), ("LABEL", "x=y")]
    assert parse_changes([]) == [] and parse_changes(["", "   "]) == []


@pytest.mark.parametrize("change", ["ADD . /app", "RUN true", "FROM scratch", "COPY a b", "SHELL [\"x\"]"])
def test_instructions_commit_does_not_take(change: str) -> None:
    with pytest.raises(UsageError, match=f"^{change.split()[0]} is not a valid change command"):
        parse_changes([change])


def test_nothing_is_applied_when_one_change_is_bad() -> None:
    with pytest.raises(UsageError):
        apply_changes(BASE, ["ENV A=1", "ADD x y"])


def test_cmd_and_entrypoint_forms() -> None:
    assert apply_changes({}, ['CMD ["echo","hi"]'])["Cmd"] == ["echo", "hi"]
    assert apply_changes({}, ["CMD echo $HOME"])["Cmd"] == ["/bin/sh", "-c", "echo $HOME"]  # not expanded
    assert apply_changes({}, ["CMD [not json"])["Cmd"] == ["/bin/sh", "-c", "[not json"]
    assert apply_changes({}, ['CMD ["a", 1]'])["Cmd"] == ["/bin/sh", "-c", '["a", 1]']
    assert apply_changes({"Shell": ["/bin/bash", "-lc"]}, ["ENTRYPOINT run"])["Entrypoint"] == \
        ["/bin/bash", "-lc", "run"]
    with pytest.raises(UsageError, match="CMD requires"):
        apply_changes({}, ["CMD"])


def test_entrypoint_drops_cmd_unless_cmd_came_first() -> None:
    assert apply_changes(BASE, ['ENTRYPOINT ["/app"]'])["Cmd"] is None
    assert apply_changes(BASE, ['CMD ["x"]', 'ENTRYPOINT ["/app"]'])["Cmd"] == ["x"]
    assert apply_changes(BASE, ['ENTRYPOINT ["/app"]', 'CMD ["y"]'])["Cmd"] == ["y"]


def test_merge_with_container_config_restores_cmd_without_entrypoint() -> None:
    container = {"Cmd": ["sh", "-c", "x"], "Entrypoint": None}
    new = apply_changes(container, ["ENTRYPOINT []"])
    assert new["Entrypoint"] == [] and new["Cmd"] is None
    assert merge_container_config(new, container)["Cmd"] == ["sh", "-c", "x"]  # Docker's merge()
    new = apply_changes(container, ['ENTRYPOINT ["/e"]'])
    assert merge_container_config(new, container)["Cmd"] is None


def test_env_forms_quotes_and_expansion() -> None:
    cfg = apply_changes(BASE, ['ENV A=1 B="two words" C=\'$HOME\' D=$HOME/x E=${NOPE:-dflt}'])
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "HOME=/root", "A=1", "B=two words", "C=$HOME",
                          "D=/root/x", "E=dflt"]
    # the old form: one name, the rest of the line is the value
    assert apply_changes({}, ["ENV GREETING hello  big world"])["Env"] == ["GREETING=hello  big world"]
    # a known name is replaced in place; PATH extended from its old value
    cfg = apply_changes(BASE, ["ENV PATH=/opt/bin:$PATH"])
    assert cfg["Env"][0] == "PATH=/opt/bin:/usr/bin:/bin"
    # every pair of one ENV sees the Env from before it (Docker expands the line at once)
    assert apply_changes({}, ["ENV X=1 Y=$X"])["Env"] == ["X=1", "Y="]
    assert apply_changes({}, ["ENV X=1", "ENV Y=$X"])["Env"] == ["X=1", "Y=1"]
    for bad, why in (("ENV", "requires at least one"), ("ENV A", "must have two arguments"),
                     ("ENV A=1 B", "can't find ="), ("ENV =x", "can not be blank"),
                     ('ENV A="open', "matching double-quote")):
        with pytest.raises(UsageError, match=why):
            apply_changes({}, [bad])


def test_input_config_is_not_changed() -> None:
    base = {"Env": ["A=1"], "Labels": {"a": "b"}}
    apply_changes(base, ["ENV A=2", "LABEL a=c"])
    assert base == {"Env": ["A=1"], "Labels": {"a": "b"}}


def test_label_expose_volume() -> None:
    cfg = apply_changes({"Labels": {"old": "1"}, "Env": ["V=3"]},
                        ['LABEL version=$V "with space"="a b" old=2',
                         "EXPOSE 80 53/udp 8000-8002/TCP", 'VOLUME ["/data", "/logs"]', "VOLUME /a /b"])
    assert cfg["Labels"] == {"old": "2", "version": "3", "with space": "a b"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}, "/a": {}, "/b": {}}
    for bad in ("EXPOSE 0", "EXPOSE 70000", "EXPOSE 80/icmp", "EXPOSE 90-80", "EXPOSE x", "EXPOSE"):
        with pytest.raises(UsageError):
            apply_changes({}, [bad])
    with pytest.raises(UsageError, match="empty string"):
        apply_changes({}, ['VOLUME [""]'])


def test_user_workdir_stopsignal_onbuild() -> None:
    cfg = apply_changes(BASE, ["USER 1000:1000", "WORKDIR sub/../dir", "STOPSIGNAL SIGINT", "ONBUILD RUN make"])
    assert cfg["User"] == "1000:1000"
    assert cfg["WorkingDir"] == "/app/dir"  # relative to the WorkingDir so far
    assert cfg["StopSignal"] == "SIGINT" and cfg["OnBuild"] == ["RUN make"]
    assert apply_changes(BASE, ["WORKDIR /abs//x/"])["WorkingDir"] == "/abs/x"
    assert apply_changes({"Env": ["D=/srv"]}, ["WORKDIR $D/www"])["WorkingDir"] == "/srv/www"
    assert apply_changes({}, ["STOPSIGNAL 9"])["StopSignal"] == "9"
    for bad, why in (("STOPSIGNAL SIGNOPE", "Invalid signal"), ("STOPSIGNAL 0", "Invalid signal"),
                     ("USER", "exactly one argument"), ("ONBUILD ONBUILD RUN x", "isn't allowed"),
                     ("ONBUILD", "requires at least one")):
        with pytest.raises(UsageError, match=why):
            apply_changes({}, [bad])


def test_healthcheck() -> None:
    assert apply_changes({}, ["HEALTHCHECK NONE"])["Healthcheck"] == {"Test": ["NONE"]}
    hc = apply_changes({}, ["HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD curl -f http://x/"])
    assert hc["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/"], "Interval": 30_000_000_000,
                                 "Timeout": 90_000_000_000, "Retries": 3}
    assert apply_changes({}, ['HEALTHCHECK CMD ["true"]'])["Healthcheck"] == {"Test": ["CMD", "true"]}
    for bad, why in (("HEALTHCHECK --interval=30s NONE", "takes no arguments"),
                     ("HEALTHCHECK --nope=1 CMD x", "Unknown flag"), ("HEALTHCHECK --interval CMD x", "Missing a value"),
                     ("HEALTHCHECK --interval=10us CMD x", "less than 1ms"), ("HEALTHCHECK CMD", "Missing command"),
                     ("HEALTHCHECK RUN x", "Unknown type"), ("HEALTHCHECK --retries=-1 CMD x", "negative")):
        with pytest.raises(UsageError, match=why):
            apply_changes({}, [bad])


def test_durations() -> None:
    assert parse_duration("0") == 0
    assert parse_duration("1h2m3.5s") == 3_723_500_000_000
    assert parse_duration("250ms") == 250_000_000 and parse_duration("2us") == 2_000
    for bad in ("", "5", "1x", "s", "-1s", "1s 2s"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_words_and_expansion() -> None:
    assert parse_words('a="b c" d=\'e f\' g\\ h') == ['a="b c"', "d='e f'", "g\\ h"]
    env = {"A": "x", "E": ""}
    assert expand("${A}-$A-\\$A-'$A'-\"$A\"", env) == "x-x-$A-$A-x"
    assert expand("${E:-d} ${E-d} ${A:+set} ${NOPE+set}", env) == "d  set "
    assert expand('"a\\"b\\q"', env) == 'a"b\\q'
    assert expand("$ $1 ${A}", env) == "$  x"
    for bad, why in (("${A", "missing"), ("${A%x}", "unsupported modifier"), ("${NOPE:?not set}", "not set"),
                     ("'open", "single-quote")):
        with pytest.raises(UsageError, match=why):
            expand(bad, env)


def test_parse_tag() -> None:
    assert str(parse_tag("app")) == "docker.io/library/app:latest"
    assert str(parse_tag("localhost:5000/a/b:1")) == "localhost:5000/a/b:1"
    with pytest.raises(UsageError, match="digest"):
        parse_tag("app@sha256:" + "a" * 64)
