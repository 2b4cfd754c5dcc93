"""``minirun image ...`` and ``minirun container ...``: Docker's management commands, the
same verbs as the top-level ones (``image ls`` is ``images``, ``container rm`` is ``rm``)
plus the prune verbs, imported only when used."""

from __future__ import annotations

import importlib

import click

from minirun.cli.main import COMMANDS

IMAGE: dict[str, str] = {
    "ls": COMMANDS["images"],
    "rm": COMMANDS["rmi"],
    "prune": "minirun.cli.prune:image_prune",
    "inspect": "minirun.cli.groups:image_inspect",
    "history": COMMANDS["history"],
    "load": COMMANDS["load"],
    "save": COMMANDS["save"],
    "tag": COMMANDS["tag"],
    "pull": COMMANDS["pull"],
    "push": COMMANDS["push"],
    "import": COMMANDS["import"],
    "layers": COMMANDS["layers"],
    "blame": COMMANDS["blame"],
    **{verb: COMMANDS[verb] for verb in ("build",) if verb in COMMANDS},
}

CONTAINER: dict[str, str] = {
    "ls": COMMANDS["ps"],
    "run": COMMANDS["run"],
    "rm": COMMANDS["rm"],
    "prune": "minirun.cli.prune:container_prune",
    "inspect": "minirun.cli.groups:container_inspect",
    **{verb: COMMANDS[verb] for verb in ("create", "start", "stop", "restart", "kill", "wait",
                                         "logs", "stats", "exec", "diff", "port", "rename",
                                         "pause", "unpause", "top", "commit", "export", "cp",
                                         "attach")
       if verb in COMMANDS},
}


class _Verbs(click.Group):
    verbs: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.verbs)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.verbs.get(cmd_name)
        if target is None:
            return None
        mod_name, attr = target.split(":")
        cmd: click.Command = getattr(importlib.import_module(mod_name), attr)
        return cmd


class _ImageVerbs(_Verbs):
    verbs = IMAGE


class _ContainerVerbs(_Verbs):
    verbs = CONTAINER


@click.group(cls=_ImageVerbs)
def image() -> None:
    """Manage images (ls, rm, prune, inspect, history, load, save, tag, pull, push)."""


@click.group(cls=_ContainerVerbs)
def container() -> None:
    """Manage containers (ls, run, rm, prune, inspect, start, stop, logs, exec, ...)."""


def _typed_inspect(kind: str) -> click.Command:
    from minirun.cli.inspect import inspect

    @click.command("inspect")
    @click.option("-f", "--format", "fmt", metavar="TEMPLATE",
                  help="Format each object with a Go template ('{{.Id}}'); json: the JSON array.")
    @click.argument("name", nargs=-1, required=True)
    @click.pass_context
    def typed(ctx: click.Context, fmt: str | None, name: tuple[str, ...]) -> None:
        ctx.invoke(inspect, fmt=fmt, kind=kind, name=name)

    typed.help = f"Show low-level information on one or more {kind}s, as JSON."
    return typed


image_inspect = _typed_inspect("image")
container_inspect = _typed_inspect("container")
