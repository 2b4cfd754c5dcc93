"""The ``minirun`` command: a click group whose verbs live in small modules and are
imported only when used, so ``minirun run`` never pays for tar, json schema or
netlink imports it does not need. Every verb is a thin layer over the library; every
:class:`MinirunError` becomes one ``Error: ...`` line and a non-zero exit."""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from typing import Any

import click

from minirun import __version__
from minirun.errors import MinirunError, NeedsRoot

# verb -> "module:attribute" (a click.Command), in the order `minirun --help` lists them.
COMMANDS: dict[str, str] = {
    "run": "minirun.cli.containers:run",
    "create": "minirun.cli.containers:create",
    "start": "minirun.cli.containers:start",
    "stop": "minirun.cli.containers:stop",
    "restart": "minirun.cli.containers:restart",
    "kill": "minirun.cli.containers:kill",
    "wait": "minirun.cli.containers:wait",
    "rm": "minirun.cli.containers:rm",
    "ps": "minirun.cli.containers:ps",
    "logs": "minirun.cli.containers:logs",
    "attach": "minirun.cli.attach:attach",
    "exec": "minirun.cli.exec:exec_",
    "stats": "minirun.cli.containers:stats",
    "top": "minirun.cli.manage:top",
    "port": "minirun.cli.network:port",
    "diff": "minirun.cli.containers:diff",
    "cp": "minirun.cli.copy:cp",
    "rename": "minirun.cli.manage:rename",
    "pause": "minirun.cli.manage:pause",
    "unpause": "minirun.cli.manage:unpause",
    "commit": "minirun.cli.authoring:commit",
    "export": "minirun.cli.authoring:export",
    "events": "minirun.cli.events:events",
    "build": "minirun.cli.build:build",
    "images": "minirun.cli.images:images",
    "history": "minirun.cli.images:history",
    "layers": "minirun.cli.provenance:layers",
    "blame": "minirun.cli.provenance:blame",
    "inspect": "minirun.cli.inspect:inspect",
    "load": "minirun.cli.images:load",
    "save": "minirun.cli.images:save",
    "import": "minirun.cli.authoring:import_",
    "tag": "minirun.cli.images:tag",
    "rmi": "minirun.cli.images:rmi",
    "pull": "minirun.cli.registry:pull",
    "push": "minirun.cli.registry:push",
    "login": "minirun.cli.registry:login",
    "logout": "minirun.cli.registry:logout",
    "network": "minirun.cli.network:network",
    "volume": "minirun.cli.volume:volume",
    "image": "minirun.cli.groups:image",
    "container": "minirun.cli.groups:container",
    "system": "minirun.cli.system:system",
    "_cleanup": "minirun.cli.containers:cleanup",
    "_health": "minirun.cli.events:health_checker",
}


def summary(cmd: click.Command) -> str:
    """A command's line in a help listing: its short_help, or the first sentence of its help,
    whole (click cuts it at the terminal's width, mid-sentence)."""
    if cmd.short_help:
        return cmd.short_help
    text = " ".join((cmd.help or "").split("\n\n")[0].split())
    end = re.search(r"[.!?](?=\s+[A-Z])", text)
    return text[:end.end()] if end else text


def format_commands(group: click.Group, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    """The Commands section of every minirun group's help: each summary in full, wrapped."""
    rows = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            rows.append((name, summary(cmd)))
    if rows:
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [c for c in COMMANDS if not c.startswith("_")]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_commands(self, ctx, formatter)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        mod_name, attr = target.split(":")
        cmd: click.Command = getattr(importlib.import_module(mod_name), attr)
        if isinstance(cmd, click.Group):  # network, image, system...: their verbs listed alike
            cmd.format_commands = functools.partial(format_commands, cmd)  # type: ignore[method-assign]
        return cmd


@click.group(cls=LazyGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="MINIRUN_ROOT", default="/var/lib/minirun", show_default=True,
              help="Store for images and containers (env MINIRUN_ROOT).")
@click.version_option(__version__, "--version", prog_name="minirun")
@click.pass_context
def cli(ctx: click.Context, root: str) -> None:
    """minirun: a small container runtime (OCI images, overlayfs layers, namespaces)."""
    ctx.obj = {"root": root}
    if ctx.invoked_subcommand is None:  # bare `minirun`: the help, and success, as `docker`
        click.echo(ctx.get_help())


def store_from(ctx: click.Context, command: str = "") -> Any:
    """The image store for this invocation; minirun manages mounts and owners, so root only."""
    if os.geteuid() != 0:
        raise NeedsRoot(command or (ctx.info_name or ""))
    from minirun.image.store import Store

    return Store(ctx.find_root().obj["root"])


def main() -> None:
    _prewarm_network(sys.argv[1:])
    _exit(_main())


def _prewarm_network(argv: list[str]) -> None:
    """`minirun run` on a bridge network: start the pyroute2 worker (network/netlink.py)
    now, before click is even imported, so that its ~0.1 s import on the other core is
    over when the container's namespace is ready."""
    if _bridge_run(argv):
        from minirun.network import netlink

        netlink.prewarm()


def _verb_and_args(argv: list[str]) -> tuple[str, list[str]]:
    """The verb (after the global options; ``container run`` is ``run``) and what follows it."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--root":
            i += 2
            continue
        if a == "container" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            i += 1
            continue
        if not a.startswith("-"):
            return a, argv[i + 1:]
        i += 1
    return "", []


def _bridge_run(argv: list[str]) -> bool:
    """A cheap look at argv: an attached `run` without --network none/host? A wrong
    guess only costs a worker that is killed unused (or one started later)."""
    verb, rest = _verb_and_args(argv)
    if verb != "run":
        return False
    args = iter(rest)
    network = "bridge"
    for a in args:
        if a in ("-d", "--detach") or (a.startswith("-") and not a.startswith("--")
                                       and "d" in a[1:] and a[1:].isalpha()):  # fmt: skip
            return False  # the detached monitor starts its own (it forks first)
        if a in ("--network", "--net"):
            network = next(args, "bridge")
        elif a.startswith(("--network=", "--net=")):
            network = a.partition("=")[2]
        elif not a.startswith("-"):
            break  # the image (or an option's value): the container's command follows
    return network not in ("none", "host")


def _main() -> int:
    """Run the CLI; the exit status. Every MinirunError is one line on stderr."""
    try:
        rc = cli.main(standalone_mode=False, prog_name="minirun")
    except MinirunError as e:
        click.echo(f"Error: {e}", err=True)
        return _status(e.exit_code)
    except OSError as e:
        # a path the user gave that cannot be written, a full disk, a read-only --root:
        # theirs to fix, so one line naming what failed, not an "internal error"
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"Error: {e.strerror or e}{where}", err=True)
        return _status(125)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return 125 if _verb_and_args(sys.argv[1:])[0] == "run" else e.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `minirun images | head`: the reader went away; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug, not a user error: still one line, details on request
        if os.environ.get("MINIRUN_DEBUG"):
            raise
        click.echo(f"Error: internal error: {type(e).__name__}: {e} (set MINIRUN_DEBUG=1 for a traceback)",
                   err=True)
        return 125
    return rc if isinstance(rc, int) else 0


def _exit(code: int) -> None:
    """Flush what we wrote, then leave without the interpreter's teardown of every module
    (~6-10 ms on each `minirun run`). Nothing of ours needs it: files are closed by their
    `with` blocks, and there are no threads."""
    netlink = sys.modules.get("minirun.network.netlink")
    if netlink is not None:
        netlink.done()  # a pyroute2 worker a failed run did not use
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


def _status(code: int) -> int:
    """Docker's statuses: 125 is minirun's own failure in `run`; every other verb's error
    is 1 (`start -a` too: only the container's own status passes through)."""
    if code != 125:
        return code
    verb, _rest = _verb_and_args(sys.argv[1:])
    return 125 if verb == "run" else 1
