"""minirun/cli/template.py: the Go text/template subset Docker's --format uses, checked
against what Go (and Docker) print for the same template and data."""

from __future__ import annotations

from typing import Any

import click
import pytest

from minirun.cli.template import Lazy, TemplateError, docker_format, format_rows, parse, tabwrite
from minirun.errors import UsageError

DOC: dict[str, Any] = {
    "Id": "abc123",
    "Name": "/web",
    "Args": ["-c", "sleep 9"],
    "State": {"Status": "running", "Running": True, "Pid": 42, "ExitCode": 0},
    "Config": {
        "Env": ["A=1", "B=two"],
        "Cmd": None,
        "Labels": {"org.x": "1", "app": "web"},
        "ExposedPorts": {"80/tcp": {}},
    },
    "Mounts": [{"Source": "/h", "Destination": "/c"}, {"Source": "/h2", "Destination": "/c2"}],
    "Size": 1.5,
}


def render(tmpl: str, data: Any = DOC, type_name: str = "container") -> str:
    return parse(tmpl).render(data, type_name)


@pytest.mark.parametrize(("tmpl", "out"), [
    ("{{.Id}}", "abc123"),
    ("id={{.Id}} name={{.Name}}", "id=abc123 name=/web"),
    ("{{.State.Pid}}", "42"),
    ("{{.State.Running}}", "true"),
    ("{{.Config.Env}}", "[A=1 B=two]"),  # a list prints Go-style
    ("{{.Config.Labels}}", "map[app:web org.x:1]"),  # a map: keys sorted
    ("{{.Config.ExposedPorts}}", "map[80/tcp:{}]"),
    ("{{.State}}", "{running true 42 0}"),  # a struct: its values
    ("{{.Config.Cmd}}", "<nil>"),
    ("{{.Config.Labels.nope}}", "<no value>"),  # a map's missing key is not an error
    ("{{.Size}} {{1e6}} {{100000.0}} {{0.25}}", "1.5 1e+06 100000 0.25"),
    ("{{json .Config}}", '{"Env":["A=1","B=two"],"Cmd":null,"Labels":{"app":"web","org.x":"1"},'
                         '"ExposedPorts":{"80/tcp":{}}}'),
    ("{{json .Args}}", '["-c","sleep 9"]'),
    ("{{json .State.Status}}", '"running"'),
    ('{{index .Config.Labels "app"}}', "web"),
    ('{{index .Config.Labels "missing"}}', ""),
    ("{{index .Config.Env 1}}", "B=two"),
    ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/h:/c /h2:/c2 "),
    ("{{range .Config.Env}}[{{.}}]{{end}}", "[A=1][B=two]"),
    ("{{range $i, $m := .Mounts}}{{$i}}={{$m.Source}};{{end}}", "0=/h;1=/h2;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "app=web,org.x=1,"),
    ("{{range .Config.Cmd}}x{{else}}none{{end}}", "none"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .Config.Cmd}}cmd{{else if .Args}}args{{else}}none{{end}}", "args"),
    ('{{if eq .State.Status "exited" "running"}}yes{{end}}', "yes"),
    ("{{if and .State.Running (not .State.ExitCode)}}ok{{end}}", "ok"),
    ("{{with .State}}{{.Status}}/{{.Pid}}{{end}}", "running/42"),
    ("{{with .Config.Cmd}}x{{else}}no cmd{{end}}", "no cmd"),
    ("{{lower .State.Status | upper}}", "RUNNING"),
    ("{{.Name | printf \"%s!\"}}", "/web!"),
    ('{{join .Config.Env ","}}', "A=1,B=two"),
    ('{{split "a:b:c" ":"}}', "[a b c]"),
    ('{{title "hello big world"}}', "Hello Big World"),
    ('{{pad "x" 2 1}}|', "  x |"),
    ('{{truncate .Id 3}}', "abc"),
    ("{{len .Mounts}} {{len .Id}}", "2 6"),
    ('{{println "a" 1}}b', "a 1\nb"),
    ('{{print 1 2 "s" 3}}', "1 2s3"),
    ('{{printf "%-5s|%3d|%q|%v" "ab" 7 "q" .Config.Env}}', 'ab   |  7|"q"|[A=1 B=two]'),
    ('{{"literal"}} {{`raw\\n`}} {{true}} {{42}}', "literal raw\\n true 42"),
    ("{{$n := .Name}}{{$n}}{{$n = .Id}}-{{$n}}", "/web-abc123"),
    ("{{$}}" , "{abc123 /web [-c sleep 9] {running true 42 0} {[A=1 B=two] <nil> map[app:web org.x:1] "
               "map[80/tcp:{}]} [{/h /c} {/h2 /c2}] 1.5}"),
    ("{{(index .Mounts 1).Source}}", "/h2"),
    ("a  {{- .Id -}}  \n b", "aabc123b"),
    ("a {{.Id}} b", "a abc123 b"),
    ("{{/* a comment */}}x{{- /* trimmed */ -}} y", "xy"),
    ("\\t stays {{.Id}}", "\\t stays abc123"),  # inspect does not turn \t into a tab
])
def test_render(tmpl: str, out: str) -> None:
    assert render(tmpl) == out


@pytest.mark.parametrize(("tmpl", "message"), [
    ("{{.Foo}}", 'template: :1:2: executing "" at <.Foo>: can\'t evaluate field Foo in type container'),
    ("{{.State.Foo}}", "at <.State.Foo>: can't evaluate field Foo in type State"),
    ("x\n  {{.Bar}}", "template: :2:4: executing"),
    ("{{.Config.Cmd.X}}", "nil pointer evaluating interface {}.X"),
    ("{{.Id.X}}", "can't evaluate field X in type string"),
    ('{{join .Config.Env}}', "wrong number of args for join: want 2 got 1"),
    ("{{lower .Config.Env}}", "wrong type for value; expected string; got []interface {}"),
    ("{{range .Id}}{{end}}", "range can't iterate over abc123"),
    ("{{index .Config.Env 5}}", "index out of range: 5"),
    ("{{$nope}}", 'undefined variable "$nope"'),
    ("{{.Id | .Name}}", "Name has arguments but cannot be invoked as function"),
])
def test_exec_errors_are_one_line_like_go(tmpl: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        render(tmpl)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, UsageError)


@pytest.mark.parametrize(("tmpl", "message"), [
    ("{{.Id", "template: :1: unclosed action"),
    ("{{foo .Id}}", 'function "foo" not defined'),
    ("{{if .Id}}x", "unexpected EOF"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{#}}", "unrecognized character in action: U+0023 '#'"),
    ("{{}}", "missing value for command"),
    ("{{(.Id}}", "unclosed left paren"),
    ("{{/* x }}", "unclosed comment"),
    ("{{define \"x\"}}{{end}}", "{{define}} is not supported"),
    ("a\nb {{.Id", "template: :2: unclosed action"),
])
def test_parse_errors(tmpl: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        parse(tmpl)
    assert str(e.value).startswith("template parsing error: template: :")
    assert message in str(e.value)


def test_quotes_may_hold_braces() -> None:
    assert render('{{"}}"}}-{{`{{`}}') == "}}-{{"


def test_methods_and_lazy_fields() -> None:
    calls = []

    def size() -> str:
        calls.append(1)
        return "10B"

    row = {"ID": "x", "Size": Lazy(size), "Label": lambda k: {"a": "1"}.get(k, "")}
    assert render("{{.ID}}", row) == "x"
    assert calls == []  # a template without .Size does not compute it
    assert render('{{.Size}} {{.Size}} {{.Label "a"}}/{{.Label "b"}}', row) == "10B 10B 1/"
    assert calls == [1]
    assert render("{{json .}}", row) == '{"ID":"x","Size":"10B"}'  # methods left out
    with pytest.raises(TemplateError, match="wrong number of args for Label"):
        render("{{.Label}}", row)


def test_docker_format_keywords_and_escapes() -> None:
    assert docker_format(r"table {{.ID}}\t{{.Names}}") == (True, "{{.ID}}\t{{.Names}}")
    assert docker_format(r"  {{.ID}}\n") == (False, "{{.ID}}\n")
    assert docker_format("{{.ID}}") == (False, "{{.ID}}")


ROWS = [{"ID": "abc", "Names": "web", "Label": lambda k: "v"},
        {"ID": "defghijkl", "Names": "db", "Label": lambda k: ""}]
HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Label": lambda *_: "LABEL"}


def test_table_prefix_prints_a_header_row_and_aligns() -> None:
    out = format_rows('table {{.ID}}\\t{{.Names}}\\t{{.Label "x"}}', ROWS, HEADERS, "container")
    assert out.splitlines() == [
        "CONTAINER ID   NAMES   LABEL",
        "abc            web     v",
        "defghijkl      db",
    ]
    # the header functions pass the column name through, as Docker's HeaderFunctions
    assert format_rows("table {{lower .Names}}", [], HEADERS) == "NAMES\n"


def test_plain_template_one_line_per_row() -> None:
    assert format_rows(r"{{.ID}}\t{{upper .Names}}", ROWS, HEADERS) == "abc\tWEB\ndefghijkl\tDB\n"
    assert format_rows("{{.ID}}", [], HEADERS) == ""


def test_table_unknown_field_is_an_error_even_without_rows() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type container"):
        format_rows("table {{.Nope}}", [], HEADERS, "container")


def test_tabwrite() -> None:
    assert tabwrite(["a\tbb\tc", "aaaa\tb\t", "x"]) == "a      bb   c\naaaa   b\nx\n"


def test_help_summaries_are_whole_first_sentences() -> None:
    from minirun.cli.main import cli, summary

    @click.command()
    def one() -> None:
        """Start stopped containers, on the container layer they already have. More text
        that is not part of the summary."""

    @click.command(short_help="Given.")
    def two() -> None:
        """Ignored."""

    assert summary(one) == "Start stopped containers, on the container layer they already have."
    assert summary(two) == "Given."
    text = cli.get_help(click.Context(cli, info_name="minirun", terminal_width=80))
    assert not [ln for ln in text.split("Commands:")[1].splitlines() if ln.endswith("...")]
    assert "start Start stopped containers, on the container layer they already have." in " ".join(text.split())
