"""Go's text/template, the part of it Docker's ``--format`` uses: small, pure, no dependency.

    {{.Field}} {{.State.Pid}} {{.}} {{$}} {{$v}}   fields, dot, variables
    {{if P}}..{{else if P}}..{{else}}..{{end}}     also {{range P}} (with $i, $e :=) and {{with P}}
    {{json .}} {{index .Labels "k"}} {{join .List ","}} {{split}} {{lower}} {{upper}} {{title}}
    {{pad}} {{truncate}} {{len}} {{print}} {{printf}} {{println}} {{eq}} {{ne}} {{lt}} {{le}}
    {{gt}} {{ge}} {{and}} {{or}} {{not}}           Docker's functions and Go's builtins
    {{.X | lower}} {{(index .L 0).Name}} {{"s"}} {{`raw`}} {{1}} {{true}} {{nil}}
    {{- trim markers -}} {{/* comments */}}

Values are Python's JSON types, printed the way Go prints them: a list ``[a b]``, a map
``map[k:v]`` (keys sorted), a struct ``{v1 v2}``, None ``<nil>``. A dict whose keys are all Go
field names (capitalised identifiers, like ``{"Id": .., "State": ..}``) is taken as a struct: a
missing field is an error, as in Go (``can't evaluate field Foo``); any other dict is a map,
whose missing key prints ``<no value>``. A callable value is a Go method, called with the
arguments that follow it (``{{.Label "k"}}``); a :class:`Lazy` value is a field computed only
when a template uses it. Errors are one line, worded as Go's."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minirun.errors import UsageError


class TemplateError(UsageError):
    """A template that does not parse, or fails on the data it is given."""


class _NoValue:
    """What a missing map key gives (Go's invalid reflect.Value): prints ``<no value>``, is false."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()


class Lazy:
    """A field computed on first use: ``{{.Size}}`` walks a directory, other templates must not."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute = compute
        self._value: Any = NO_VALUE
        self._done = False

    def get(self) -> Any:
        if not self._done:
            self._value, self._done = self._compute(), True
        return self._value


# --- printing values the way Go's fmt.Print does ----------------------------------------

def _is_struct(d: Mapping[str, Any]) -> bool:
    return bool(d) and all(isinstance(k, str) and k[:1].isupper() and k.isidentifier() for k in d)


def _value(v: Any) -> Any:
    return v.get() if isinstance(v, Lazy) else v


def text(v: Any, in_map: bool = False) -> str:
    """``v`` as ``{{.}}`` prints it (Go's %v)."""
    v = _value(v)
    if isinstance(v, str):
        return v
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, Mapping):
        if _is_struct(v):
            return "{" + " ".join(text(x) for x in v.values()) + "}"
        if not v and in_map:
            return "{}"  # {"80/tcp": {}}: Go's struct{} values, printed map[80/tcp:{}]
        return "map[" + " ".join(f"{k}:{text(v[k], True)}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(text(x) for x in v) + "]"
    return str(v)


def _go_float(f: float) -> str:
    """fmt's %v of a float64: the shortest digits that round-trip, in %e form when the
    exponent is below -4 or from 6 up (``1e+06``, ``1.5``, ``100000``)."""
    import math
    from decimal import Decimal

    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    d = Decimal(repr(f)).normalize()
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    e10 = len(digits) + exp - 1
    if -4 <= e10 < 6:
        return format(d, "f")
    mant = "".join(map(str, digits))
    mant = mant[0] + ("." + mant[1:] if len(mant) > 1 else "")
    return f"{'-' if sign else ''}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"


def _go_type(v: Any) -> str:
    v = _value(v)
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    for t, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
                    (list, "[]interface {}"), (tuple, "[]interface {}")):
        if isinstance(v, t):
            return name
    return "interface {}"


def plain(v: Any) -> Any:
    """``v`` ready for json.dumps: lazy fields computed, methods left out, maps sorted (as Go's
    encoding/json writes a map; a struct keeps its field order)."""
    v = _value(v)
    if v is NO_VALUE:
        return None
    if isinstance(v, Mapping):
        keys = list(v) if _is_struct(v) else sorted(v)
        return {k: plain(v[k]) for k in keys if not callable(_value(v[k]))}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    return v


# --- lexing ------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<field>(?:\.[^\W\d]\w*)+)
  | (?P<number>[-+]?(?:0[xX][\da-fA-F_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<dot>\.)
  | (?P<var>\$\w*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<word>[^\W\d]\w*)
  | (?P<punct>[(),|])
""", re.X)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int  # offset in the template
    spaced: bool  # whitespace before it (`$x.Name` is one operand, `$x .Name` two)


def _pieces(src: str) -> list[tuple[str, str, int]]:
    """The template as ("text", TEXT, pos) and ("action", INSIDE, pos) pieces, trim markers
    (``{{- `` and `` -}}``) applied to the text around them."""
    out: list[tuple[str, str, int]] = []
    i, trim = 0, False
    while True:
        j = src.find("{{", i)
        txt = src[i:] if j < 0 else src[i:j]
        if trim:
            txt = txt.lstrip(_SPACE)
        if j < 0:
            if txt:
                out.append(("text", txt, i))
            return out
        k = j + 2
        if src[k:k + 1] == "-" and src[k + 1:k + 2] and src[k + 1] in _SPACE:
            txt, k = txt.rstrip(_SPACE), k + 2
        if txt:
            out.append(("text", txt, i))
        end = _action_end(src, k, j)
        trim = src[end - 1:end] == "-" and end - 2 >= k and src[end - 2] in _SPACE
        out.append(("action", src[k:end - 1] if trim else src[k:end], k))
        i = end + 2


def _action_end(src: str, k: int, start: int) -> int:
    """Where the ``}}`` closing the action that starts at ``k`` is (quotes may hold ``}}``)."""
    p = k
    if src.startswith("/*", p):
        close = src.find("*/", p + 2)
        if close < 0:
            raise _parse_error(src, start, "unclosed comment")
        m = re.compile(r"(?:\s-)?}}").match(src, close + 2)
        if not m:
            raise _parse_error(src, start, "comment ends before closing delimiter")
        return m.end() - 2
    while p < len(src):
        if src.startswith("}}", p):
            return p
        c = src[p]
        if c in "\"'":
            p += 1
            while p < len(src) and src[p] != c:
                if src[p] == "\n":
                    raise _parse_error(src, p, "unterminated quoted string")
                p += 2 if src[p] == "\\" else 1
            if p >= len(src):
                raise _parse_error(src, start, "unterminated quoted string")
        elif c == "`":
            p = src.find("`", p + 1)
            if p < 0:
                raise _parse_error(src, start, "unterminated raw quoted string")
        p += 1
    raise _parse_error(src, start, "unclosed action")


def _tokens(src: str, inner: str, base: int) -> list[_Tok]:
    toks: list[_Tok] = []
    p, spaced = 0, True
    while p < len(inner):
        m = _TOKEN.match(inner, p)
        if not m or m.lastgroup is None:
            c = inner[p]
            raise _parse_error(src, base + p, f"unrecognized character in action: U+{ord(c):04X} {c!r}")
        if m.lastgroup == "space":
            spaced = True
        else:
            toks.append(_Tok(m.lastgroup, m.group(), base + p, spaced))
            spaced = False
        p = m.end()
    return toks


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _parse_error(src: str, pos: int, msg: str) -> TemplateError:
    return TemplateError(f"template parsing error: template: :{_line(src, pos)}: {msg}")


# --- the parse tree ----------------------------------------------------------------------

@dataclass
class _Pipe:
    cmds: list[_Cmd]
    decl: list[str] = field(default_factory=list)  # $x := ... / $i, $e := ...
    assign: bool = False  # $x = ... (sets a variable declared before)


@dataclass
class _Cmd:
    args: list[Any]  # operands: _Term
    pos: int
    text: str


@dataclass
class _Term:
    kind: str  # dot | field | var | lit | func | pipe
    pos: int
    text: str
    value: Any = None  # lit: the value; var/func: the name; pipe: a _Pipe
    fields: list[str] = field(default_factory=list)  # .A.B after it (after dot: the field chain)


@dataclass
class _Action:
    pipe: _Pipe


@dataclass
class _Block:
    kind: str  # if | range | with
    pipe: _Pipe
    body: list[Any]
    other: list[Any]  # {{else}}'s part


_KEYWORDS = {"if", "range", "with", "else", "end"}
_UNSUPPORTED = {"define", "template", "block", "break", "continue"}


class _Parser:
    def __init__(self, src: str, funcs: Mapping[str, Any]) -> None:
        self.src, self.funcs = src, funcs
        self.items = _pieces(src)
        self.i = 0

    def parse(self) -> list[Any]:
        nodes, end = self._list()
        if end is not None:
            raise _parse_error(self.src, end[1][0].pos, f"unexpected {{{{{end[0]}}}}}")
        return nodes

    def _list(self) -> tuple[list[Any], tuple[str, list[_Tok], int] | None]:
        """Nodes up to an {{else}} or {{end}} (returned with its tokens), or the end (None)."""
        nodes: list[Any] = []
        while self.i < len(self.items):
            kind, body, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(body)
                continue
            if body.lstrip(_SPACE).startswith("/*"):
                continue  # a comment
            toks = _tokens(self.src, body, pos)
            if not toks:
                raise _parse_error(self.src, pos, "missing value for command")
            head = toks[0]
            if head.kind == "word" and head.text in ("else", "end"):
                return nodes, (head.text, toks, pos)
            if head.kind == "word" and head.text in ("if", "range", "with"):
                nodes.append(self._block(head.text, toks[1:], pos))
            elif head.kind == "word" and head.text in _UNSUPPORTED:
                raise _parse_error(self.src, pos, f"{{{{{head.text}}}}} is not supported")
            else:
                nodes.append(_Action(self._pipe(toks, pos)))
        return nodes, None

    def _block(self, kind: str, toks: list[_Tok], pos: int) -> _Block:
        if not toks:
            raise _parse_error(self.src, pos, f"missing value for {kind}")
        pipe = self._pipe(toks, pos, two_vars=kind == "range")
        body, end = self._list()
        if end is None:
            raise _parse_error(self.src, len(self.src), "unexpected EOF")
        other: list[Any] = []
        word, etoks, epos = end
        if word == "else":
            rest = etoks[1:]
            if rest and rest[0].kind == "word" and rest[0].text in ("if", "with"):
                other = [self._block(rest[0].text, rest[1:], epos)]  # its {{end}} is ours too
                return _Block(kind, pipe, body, other)
            if rest:
                raise _parse_error(self.src, rest[0].pos, f"unexpected {rest[0].text!r} in else")
            other, end = self._list()
            if end is None:
                raise _parse_error(self.src, len(self.src), "unexpected EOF")
            word, etoks, epos = end
            if word != "end":
                raise _parse_error(self.src, epos, "expected end; found {{else}}")
        if len(etoks) > 1:
            raise _parse_error(self.src, etoks[1].pos, f"unexpected {etoks[1].text!r} in end")
        return _Block(kind, pipe, body, other)

    def _pipe(self, toks: list[_Tok], pos: int, two_vars: bool = False) -> _Pipe:
        stream = _Stream(toks)
        pipe = self._pipeline(stream, pos, two_vars)
        if (t := stream.peek()) is not None:
            raise _parse_error(self.src, t.pos, f"unexpected {t.text!r} in operand")
        return pipe

    def _pipeline(self, s: _Stream, pos: int, two_vars: bool = False) -> _Pipe:
        decl: list[str] = []
        assign = False
        t0, t1 = s.peek(), s.peek(1)
        if t0 and t0.kind == "var" and t1 and t1.kind in ("declare", "assign"):
            decl, assign = [t0.text], t1.kind == "assign"
            s.take(2)
        elif (two_vars and t0 and t0.kind == "var" and t1 and t1.text == ","
              and (t2 := s.peek(2)) and t2.kind == "var" and (t3 := s.peek(3)) and t3.kind == "declare"):
            decl = [t0.text, t2.text]
            s.take(4)
        cmds = [self._command(s, pos)]
        while (t := s.peek()) is not None and t.text == "|":
            s.take()
            cmds.append(self._command(s, t.pos))
        return _Pipe(cmds, decl, assign)

    def _command(self, s: _Stream, pos: int) -> _Cmd:
        args: list[_Term] = []
        while (t := s.peek()) is not None and t.text not in ("|", ")"):
            args.append(self._operand(s))
        if not args:
            raise _parse_error(self.src, pos, "missing value for command")
        return _Cmd(args, args[0].pos, _text_of(args))

    def _operand(self, s: _Stream) -> _Term:
        t = s.take()
        if t.kind == "dot":
            term = _Term("dot", t.pos, ".")
        elif t.kind == "field":
            term = _Term("field", t.pos, t.text, fields=t.text[1:].split("."))
        elif t.kind == "var":
            term = _Term("var", t.pos, t.text, t.text)
        elif t.kind in ("string", "raw", "char", "number"):
            term = _Term("lit", t.pos, t.text, self._literal(t))
        elif t.kind == "word" and t.text in ("true", "false", "nil"):
            term = _Term("lit", t.pos, t.text, {"true": True, "false": False, "nil": None}[t.text])
        elif t.kind == "word" and t.text not in _KEYWORDS:
            if t.text not in self.funcs:
                raise _parse_error(self.src, t.pos, f'function "{t.text}" not defined')
            term = _Term("func", t.pos, t.text, t.text)
        elif t.text == "(":
            inner = self._pipeline(s, t.pos)
            close = s.peek()
            if close is None or close.text != ")":
                raise _parse_error(self.src, t.pos, "unclosed left paren")
            s.take()
            term = _Term("pipe", t.pos, self.src[t.pos:close.pos + 1], inner)
        else:
            raise _parse_error(self.src, t.pos, f"unexpected {t.text!r} in operand")
        nxt = s.peek()
        if nxt is not None and nxt.kind == "field" and not nxt.spaced and term.kind in ("var", "pipe"):
            s.take()
            term.fields = nxt.text[1:].split(".")
            term.text += nxt.text
        return term

    def _literal(self, t: _Tok) -> Any:
        import ast

        try:
            if t.kind == "raw":
                return t.text[1:-1]
            if t.kind == "string":
                return ast.literal_eval(t.text)
            if t.kind == "char":
                return ord(ast.literal_eval(t.text))
            n = t.text.replace("_", "")
            if re.fullmatch(r"[-+]?(0[xX][\da-fA-F]+|\d+)", n):
                return int(n, 0) if not re.fullmatch(r"[-+]?0\d+", n) else int(n, 8)
            return float(n)
        except (ValueError, SyntaxError, TypeError):
            raise _parse_error(self.src, t.pos, f"bad syntax: {t.text}") from None


def _text_of(args: Sequence[_Term]) -> str:
    return " ".join(a.text for a in args)


class _Stream:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self, n: int = 1) -> _Tok:
        t = self.toks[self.i]
        self.i += n
        return t


# --- functions ---------------------------------------------------------------------------

class _FuncError(Exception):
    """A function's failure; the message is Go's."""


def _string(v: Any) -> str:
    v = _value(v)
    if not isinstance(v, str):
        raise _FuncError(f"wrong type for value; expected string; got {_go_type(v)}")
    return v


def _int(v: Any) -> int:
    v = _value(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _FuncError(f"wrong type for value; expected int; got {_go_type(v)}")
    return v


def truth(v: Any) -> bool:
    """Go's truth: false, 0, nil, "", and an empty list or map are false."""
    v = _value(v)
    return v is not NO_VALUE and bool(v)


def _json(v: Any) -> str:
    return json.dumps(plain(v), ensure_ascii=False, separators=(",", ":"))


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        item, key = _value(item), _value(key)
        if isinstance(item, Mapping):
            item = item.get(key, "")  # map[string]string's zero value: Labels are strings
        elif isinstance(item, list | tuple | str):
            seq = item.encode() if isinstance(item, str) else item
            k = _int(key)
            if not 0 <= k < len(seq):
                raise _FuncError(f"error calling index: index out of range: {k}")
            item = seq[k]
        elif item is None or item is NO_VALUE:
            raise _FuncError("error calling index: index of untyped nil")
        else:
            raise _FuncError(f"error calling index: can't index item of type {_go_type(item)}")
    return item


def _len(v: Any) -> int:
    v = _value(v)
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, Mapping | list | tuple):
        return len(v)
    raise _FuncError(f"error calling len: len of type {_go_type(v)}")


def _compare(name: str, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        a, b = _value(a), _value(b)
        if isinstance(a, str) != isinstance(b, str):
            raise _FuncError(f"error calling {name}: incompatible types for comparison")
        try:
            return op(a, b)
        except TypeError:
            raise _FuncError(f"error calling {name}: invalid type for comparison") from None
    return cmp


def _eq(a: Any, *bs: Any) -> bool:
    return any(_value(a) == _value(b) for b in bs)


def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _sprint(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(_value(a), str) and not isinstance(_value(args[i - 1]), str):
            out.append(" ")
        out.append(text(a))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: Any, *args: Any) -> str:
    """fmt.Sprintf, its common verbs: %v %s %q %d %t %x %X %o %e %f %g %c and %%."""
    rest = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            a = _value(next(rest))
        except StopIteration:
            return f"%!{verb}(MISSING)"
        spec = "%" + flags + (width or "") + (f".{prec}" if prec is not None else "")
        if verb in "vst":
            return (spec + "s") % text(a)
        if verb == "q":
            return (spec + "s") % json.dumps(text(a), ensure_ascii=False)
        ok_int = isinstance(a, int) and not isinstance(a, bool)
        if (verb in "dxXoc" and ok_int) or (verb in "eEfFgG" and isinstance(a, int | float)
                                             and not isinstance(a, bool)):
            return (spec + verb) % a
        return f"%!{verb}({_go_type(a)}={text(a)})"

    out = _VERB.sub(one, _string(fmt))
    extra = list(rest)
    if extra:
        out += "%!(EXTRA " + ", ".join(f"{_go_type(a)}={text(a)}" for a in extra) + ")"
    return out


def _split(s: Any, sep: Any) -> list[str]:
    s, sep = _string(s), _string(sep)
    return list(s) if sep == "" else s.split(sep)


# name -> (function, fewest arguments, most arguments or None)
FUNCS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    # Docker's (cli/templates/templates.go)
    "json": (_json, 1, 1),
    "split": (_split, 2, 2),
    "join": (lambda xs, sep: _string(sep).join(text(x) for x in (_value(xs) or [])), 2, 2),
    "title": (lambda s: re.sub(r"(?<!\w)\w", lambda m: m.group().upper(), _string(s)), 1, 1),
    "lower": (lambda s: _string(s).lower(), 1, 1),
    "upper": (lambda s: _string(s).upper(), 1, 1),
    "pad": (lambda s, a, b: " " * _int(a) + _string(s) + " " * _int(b), 3, 3),
    "truncate": (lambda s, n: _string(s)[:_int(n)], 2, 2),
    # Go's builtins
    "index": (_index, 1, None),
    "len": (_len, 1, 1),
    "not": (lambda v: not truth(v), 1, 1),
    "and": (_and, 1, None),
    "or": (_or, 1, None),
    "eq": (_eq, 2, None),
    "ne": (lambda a, b: not _eq(a, b), 2, 2),
    "lt": (_compare("lt", lambda a, b: a < b), 2, 2),
    "le": (_compare("le", lambda a, b: a <= b), 2, 2),
    "gt": (_compare("gt", lambda a, b: a > b), 2, 2),
    "ge": (_compare("ge", lambda a, b: a >= b), 2, 2),
    "print": (_sprint, 0, None),
    "printf": (_printf, 1, None),
    "println": (lambda *a: " ".join(text(x) for x in a) + "\n", 0, None),
}

# A table's header row: Docker runs the template on the column names, with its string
# functions giving their argument back (cli/templates: HeaderFunctions).
_HEADER_FUNCS = {**FUNCS, **{name: ((lambda v, *_: v), FUNCS[name][1], FUNCS[name][2])
                             for name in ("json", "split", "join", "title", "lower", "upper",
                                          "pad", "truncate")}}


# --- executing ---------------------------------------------------------------------------

_ABSENT: Any = object()  # no piped-in value


class _ExecError(Exception):
    def __init__(self, pos: int, where: str, msg: str) -> None:
        super().__init__(msg)
        self.pos, self.where, self.msg = pos, where, msg


class Template:
    """A parsed template; :meth:`render` it on each object."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.nodes = _Parser(src, FUNCS).parse()

    def render(self, data: Any, type_name: str = "", header: bool = False) -> str:
        """The template run on ``data`` (``type_name``: what Go would call its type, for
        errors). ``header``: Docker's header run, the string functions passing values through."""
        run = _Run(data, type_name, _HEADER_FUNCS if header else FUNCS)
        out: list[str] = []
        try:
            run.walk(self.nodes, data, out)
        except _ExecError as e:
            before = self.src[:e.pos]
            col = len(before[before.rfind("\n") + 1:].encode())
            raise TemplateError(f'template: :{_line(self.src, e.pos)}:{col}: executing "" '
                                f"at <{e.where}>: {e.msg}") from None
        return "".join(out)


class _Run:
    def __init__(self, root: Any, type_name: str,
                 funcs: Mapping[str, tuple[Callable[..., Any], int, int | None]]) -> None:
        self.root, self.type_name, self.funcs = root, type_name, funcs
        self.vars: list[tuple[str, Any]] = [("$", root)]

    def walk(self, nodes: Iterable[Any], dot: Any, out: list[str]) -> None:
        mark = len(self.vars)  # variables live to the end of the block they are declared in
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Action):
                v = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    out.append(text(v))
            elif node.kind == "range":
                self.range(node, dot, out)
            else:
                inner = len(self.vars)
                v = self.pipe(node.pipe, dot)
                if truth(v):
                    self.walk(node.body, v if node.kind == "with" else dot, out)
                else:
                    self.walk(node.other, dot, out)
                del self.vars[inner:]
        del self.vars[mark:]

    def range(self, node: _Block, dot: Any, out: list[str]) -> None:
        v = _value(self.pipe(node.pipe, dot, declare=False))
        items: list[tuple[Any, Any]]
        if isinstance(v, Mapping):
            items = [(k, v[k]) for k in sorted(v)]
        elif isinstance(v, list | tuple):
            items = list(enumerate(v))
        elif v is None or v is NO_VALUE:
            items = []  # a nil slice: nothing to do
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(i, i) for i in range(v)]
        else:
            cmd = node.pipe.cmds[-1]
            raise _ExecError(cmd.pos, cmd.text, f"range can't iterate over {text(v)}")
        if not items:
            self.walk(node.other, dot, out)
        for key, elem in items:
            mark = len(self.vars)
            decl = node.pipe.decl
            if len(decl) == 2:
                self.vars += [(decl[0], key), (decl[1], elem)]
            elif decl:
                self.vars.append((decl[0], elem))
            self.walk(node.body, elem, out)
            del self.vars[mark:]

    def pipe(self, pipe: _Pipe, dot: Any, declare: bool = True) -> Any:
        v = _ABSENT
        for cmd in pipe.cmds:
            v = self.command(cmd, dot, v)
        if declare and pipe.decl:
            if pipe.assign:
                self.set_var(pipe.decl[0], v, pipe.cmds[0])
            else:
                self.vars.append((pipe.decl[0], v))
        return v

    def command(self, cmd: _Cmd, dot: Any, final: Any) -> Any:
        first, rest = cmd.args[0], cmd.args[1:]
        args = [self.arg(a, dot) for a in rest] + ([] if final is _ABSENT else [final])
        if first.kind == "func":
            return self.call(first.value, args, first)
        if first.kind in ("dot", "field", "var", "pipe") and first.fields:
            return self.fields(first, dot, args)
        if args:
            raise _ExecError(first.pos, cmd.text, f"can't give argument to non-function {first.text}")
        return self.arg(first, dot)

    def arg(self, term: _Term, dot: Any) -> Any:
        if term.kind == "lit":
            return term.value
        if term.kind == "func":
            return self.call(term.value, [], term)
        if term.fields:
            return self.fields(term, dot, [])
        if term.kind == "dot":
            return dot
        if term.kind == "var":
            return self.var(term)
        return self.pipe(term.value, dot)

    def var(self, term: _Term) -> Any:
        for name, value in reversed(self.vars):
            if name == term.value:
                return value
        raise _ExecError(term.pos, term.text, f'undefined variable "{term.value}"')

    def set_var(self, name: str, value: Any, cmd: _Cmd) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise _ExecError(cmd.pos, cmd.text, f'undefined variable "{name}"')

    def fields(self, term: _Term, dot: Any, args: list[Any]) -> Any:
        if term.kind == "field":
            recv = dot
        elif term.kind == "var":
            recv = self.var(term)
        else:
            recv = self.pipe(term.value, dot)
        kind = self.type_name if recv is self.root and self.type_name else ""
        for i, name in enumerate(term.fields):
            recv = self.field(recv, name, term, args if i == len(term.fields) - 1 else [], kind)
            kind = name  # a struct's type, for errors: the field that holds it (.State: State)
        return recv

    def field(self, recv: Any, name: str, term: _Term, args: list[Any], kind: str) -> Any:
        recv = _value(recv)
        if isinstance(recv, Mapping):
            if name in recv:
                v = _value(recv[name])
            elif _is_struct(recv):
                raise _ExecError(term.pos, term.text,
                                 f"can't evaluate field {name} in type {kind or _go_type(recv)}")
            else:
                v = NO_VALUE
        elif recv is NO_VALUE:
            v = NO_VALUE
        elif recv is None:
            raise _ExecError(term.pos, term.text, f"nil pointer evaluating interface {{}}.{name}")
        else:
            raise _ExecError(term.pos, term.text,
                             f"can't evaluate field {name} in type {_go_type(recv)}")
        if callable(v):
            try:
                return v(*args)
            except TypeError:
                raise _ExecError(term.pos, term.text, f"wrong number of args for {name}") from None
        if args:
            raise _ExecError(term.pos, term.text,
                             f"{name} has arguments but cannot be invoked as function")
        return v

    def call(self, name: str, args: list[Any], term: _Term) -> Any:
        fn, least, most = self.funcs[name]
        if len(args) < least or (most is not None and len(args) > most):
            want = least if least == most else f"at least {least}"
            raise _ExecError(term.pos, name, f"wrong number of args for {name}: want {want} got {len(args)}")
        try:
            return fn(*args)
        except _FuncError as e:
            raise _ExecError(term.pos, name, str(e)) from None


# --- Docker's --format -------------------------------------------------------------------

def parse(src: str) -> Template:
    return Template(src)


def docker_format(fmt: str) -> tuple[bool, str]:
    """Docker's --format for a listing: a leading ``table`` asks for a header row and aligned
    columns; ``\\t`` and ``\\n`` (as the shell passes them) are a tab and a newline; spaces
    around the template go (cli/command/formatter: Context.preFormat)."""
    is_table = fmt.startswith("table")
    body = fmt[len("table"):] if is_table else fmt
    return is_table, body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def format_rows(fmt: str, rows: Sequence[Mapping[str, Any]], headers: Mapping[str, Any],
                type_name: str = "") -> str:
    """``ps --format TEMPLATE``: one rendered line per row; with ``table``, a header row (the
    template run on ``headers``, Docker's column names) first and tab-separated cells aligned."""
    is_table, body = docker_format(fmt)
    tmpl = parse(body)
    lines = [tmpl.render(r, type_name) for r in rows]
    if not is_table:
        return "".join(line + "\n" for line in lines)
    head = tmpl.render(headers, type_name, header=True)
    return tabwrite("\n".join([head, *lines]).split("\n"))


def tabwrite(lines: Sequence[str], padding: int = 3) -> str:
    """Go's tabwriter as Docker sets it up: each tab-terminated cell padded to its column's
    widest plus ``padding``; the last cell of a line is not aligned."""
    rows = [line.split("\t") for line in lines]
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    out = []
    for row in rows:
        aligned = "".join(cell.ljust(widths[i] + padding) for i, cell in enumerate(row[:-1]))
        out.append((aligned + row[-1]).rstrip() + "\n")
    return "".join(out)
