"""Registry verbs: pull, push, login, logout."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from minirun.cli.main import store_from
from minirun.errors import UsageError

if TYPE_CHECKING:
    from minirun.image.progress import Report

_insecure = click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                         help="Allow plain HTTP (or unverified TLS) for this registry; repeatable "
                              "(also MINIRUN_INSECURE_REGISTRIES). Loopback registries always may.")


def _reporter(quiet: bool) -> Report:
    from minirun.image import progress

    if quiet:
        return progress.ignore
    return progress.renderer(sys.stdout)


@click.command()
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Pick this platform from a multi-platform image.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image reference.")
@_insecure
@click.argument("reference")
@click.pass_context
def pull(ctx: click.Context, platform: str | None, quiet: bool, insecure: tuple[str, ...],
         reference: str) -> None:
    """Pull an image from a registry."""
    from minirun.image.pull import pull as do_pull
    from minirun.image.registry import RegistryConfig

    store = store_from(ctx, "pull")
    res = do_pull(store, reference, platform=platform, report=_reporter(quiet),
                  config=RegistryConfig.load(insecure))
    click.echo(str(res.reference))


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress the progress output.")
@_insecure
@click.argument("image")
@click.pass_context
def push(ctx: click.Context, quiet: bool, insecure: tuple[str, ...], image: str) -> None:
    """Push an image to a registry (tag it with the registry's name first)."""
    from minirun.image.push import push as do_push
    from minirun.image.registry import RegistryConfig

    store = store_from(ctx, "push")
    do_push(store, image, report=_reporter(quiet), config=RegistryConfig.load(insecure))


def _registry_arg(server: str | None) -> str:
    from minirun.image.credentials import normalize_key

    return normalize_key(server) if server else "docker.io"


@click.command()
@click.option("-u", "--username", help="Username.")
@click.option("-p", "--password", help="Password (insecure: it lands in the shell history; use --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from STDIN.")
@_insecure
@click.argument("server", required=False)
def login(username: str | None, password: str | None, password_stdin: bool, insecure: tuple[str, ...],
          server: str | None) -> None:
    """Log in to a registry (Docker Hub when SERVER is omitted); stores the credentials in
    ~/.docker/config.json (0600), as docker login does."""
    from minirun.image import credentials
    from minirun.image.auth import Credentials
    from minirun.image.registry import RegistryClient, RegistryConfig

    registry = _registry_arg(server)
    if password and password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if password:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    if password_stdin:
        if not username:
            raise UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("no username given (use -u USER, and --password-stdin to pass the password)")
        username = click.prompt("Username")
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("no password given (use --password-stdin)")
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageError("username and password must not be empty")
    creds = Credentials(username, password)
    client = RegistryClient(registry, RegistryConfig.load(insecure), creds)
    try:
        client.login_check()
    finally:
        client.close()
    path = credentials.store(registry, creds)
    click.echo(f"WARNING! Your password will be stored unencrypted in {path}.", err=True)
    click.echo("Login Succeeded")


@click.command()
@click.argument("server", required=False)
def logout(server: str | None) -> None:
    """Remove the stored credentials of a registry (Docker Hub when SERVER is omitted)."""
    from minirun.image import credentials

    registry = _registry_arg(server)
    shown = server or "docker.io"
    if credentials.remove(registry):
        click.echo(f"Removing login credentials for {shown}")
    else:
        click.echo(f"Not logged in to {shown}")
