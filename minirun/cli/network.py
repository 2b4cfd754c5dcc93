"""Network verbs: ``network create|ls|inspect|rm|prune|connect|disconnect`` and ``port``."""

from __future__ import annotations

import click

from minirun.cli.main import store_from
from minirun.cli.output import FORMAT_HELP, each, json_doc, listing
from minirun.errors import MinirunError, UsageError


@click.group()
def network() -> None:
    """Manage networks (bridges with their own subnet; containers on one reach each
    other by name, containers on different ones cannot reach each other)."""


@network.command("create")
@click.option("--subnet", help="Subnet in CIDR format (default: the first free 10.89.N.0/24).")
@click.option("--gateway", help="The bridge's address (default: the subnet's first).")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Only bridge is supported.")
@click.option("-o", "--opt", multiple=True,
              help="Driver options; com.docker.network.bridge.name=NAME names the bridge.")
@click.argument("name")
@click.pass_context
def create(ctx: click.Context, subnet: str | None, gateway: str | None, driver: str,
           opt: tuple[str, ...], name: str) -> None:
    """Create a network; prints its ID."""
    from minirun.network.attach import create_network
    from minirun.network.config import BRIDGE_OPT

    if driver != "bridge":
        raise UsageError(f"unsupported network driver {driver!r} (only bridge)")
    bridge = None
    for o in opt:
        key, _, value = o.partition("=")
        if key != BRIDGE_OPT or not value:
            raise UsageError(f"unsupported network option {o!r} (supported: {BRIDGE_OPT}=NAME)")
        bridge = value
    net = create_network(store_from(ctx, "network create"), name, subnet=subnet, bridge=bridge,
                         gateway=gateway)
    click.echo(net.id)


# Docker's network ls columns (cli/command/formatter: network.go), and minirun's two more
_NETWORK_HEADERS = {
    "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
    "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT", "Subnet": "SUBNET",
    "Bridge": "BRIDGE",
}


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate the output.")
@click.option("--format", "fmt", default="table", metavar="table|json|TEMPLATE", help=FORMAT_HELP)
@click.pass_context
def ls(ctx: click.Context, quiet: bool, no_trunc: bool, fmt: str) -> None:
    """List networks (host and none are always there, as in Docker)."""
    import time

    from minirun.network.attach import reconcile
    from minirun.network.config import Networks

    def created(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(ts)) if ts else ""

    store = store_from(ctx, "network ls")
    reconcile(store, full=True)
    common = {"Scope": "local", "IPv6": "false", "Internal": "false", "Labels": ""}
    rows = [{"ID": n.id if no_trunc else n.id[:12], "Name": n.name, "Driver": "bridge", **common,
             "CreatedAt": created(n.created), "Subnet": n.subnet, "Bridge": n.bridge}
            for n in Networks(store).all()]
    rows += [{"ID": _builtin_id(m, no_trunc), "Name": m, "Driver": d, **common, "CreatedAt": "",
              "Subnet": "", "Bridge": ""} for m, d in (("host", "host"), ("none", "null"))]
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    listing(fmt, rows, _NETWORK_HEADERS, ["ID", "Name", "Driver", "Scope", "Subnet"], "network")


def _builtin_id(name: str, no_trunc: bool) -> str:
    """host and none have IDs in Docker too (a daemon's random ones): a fixed one here."""
    import hashlib

    full = hashlib.sha256(f"minirun network {name}".encode()).hexdigest()
    return full if no_trunc else full[:12]


@network.command("inspect")
@click.option("-f", "--format", "fmt", metavar="TEMPLATE",
              help="Format each network with a Go template ('{{.IPAM.Config}}'); json: the JSON array.")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, name: tuple[str, ...]) -> None:
    """Show networks as JSON (Docker's fields: IPAM, Containers, Options...)."""
    from minirun.network.attach import network_inspect, reconcile
    from minirun.network.config import Networks

    template = None
    if fmt and fmt != "json":
        from minirun.cli.template import parse

        template = parse(fmt)  # a bad template fails first, as in Docker
    store = store_from(ctx, "network inspect")
    reconcile(store)
    nets = Networks(store)
    docs = []
    for n in name:  # Docker: every name is tried, each failure on its own line
        try:
            docs.append(network_inspect(store, nets.lookup(n)))
        except MinirunError as e:
            click.echo(f"Error: {e}", err=True)
    if template is None:
        json_doc(docs)
    else:
        click.echo("".join(template.render(d, "network") + "\n" for d in docs), nl=False)
    if len(docs) < len(name):
        ctx.exit(1)


@network.command("rm")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, name: tuple[str, ...]) -> None:
    """Remove networks (their bridge; the firewall rules with the last one)."""
    from minirun.network.attach import remove_networks

    store = store_from(ctx, "network rm")
    each(ctx, name, lambda n: remove_networks(store, [n]))


@network.command("connect")
@click.option("--ip", metavar="IPV4", help="IPv4 address on the network (e.g. 10.89.0.10).")
@click.option("--alias", "aliases", multiple=True, metavar="NAME",
              help="Add a network-scoped alias for the container (repeatable).")
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@click.pass_context
def connect(ctx: click.Context, ip: str | None, aliases: tuple[str, ...], network_name: str,
            container: str) -> None:
    """Connect a container to a network: a running one gets a new interface (eth1,
    eth2...) at once, a stopped one at its next start."""
    from minirun.network.attach import connect as do_connect

    do_connect(store_from(ctx, "network connect"), network_name, container, ip=ip,
               aliases=list(aliases))


@network.command("disconnect")
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect from a network.")
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@click.pass_context
def disconnect(ctx: click.Context, force: bool, network_name: str, container: str) -> None:
    """Disconnect a container from a network (a running one loses that interface at once)."""
    from minirun.network.attach import disconnect as do_disconnect

    do_disconnect(store_from(ctx, "network disconnect"), network_name, container, force=force)


def _add_prune() -> None:
    from minirun.cli.prune import network_prune

    network.add_command(network_prune)


_add_prune()


@click.command()
@click.argument("container")
@click.argument("private_port", required=False)
@click.pass_context
def port(ctx: click.Context, container: str, private_port: str | None) -> None:
    """List a container's published ports (80/tcp -> 0.0.0.0:8080)."""
    from minirun.container.records import Containers
    from minirun.network.attach import endpoint, reconcile

    store = store_from(ctx, "port")
    rec = Containers(store).get(container)
    reconcile(store)
    ep = endpoint(store, rec.id) if rec.alive() else None
    maps = ep.ports if ep is not None else []
    if private_port is not None:
        want = private_port if "/" in private_port else private_port + "/tcp"
        maps = [pm for pm in maps if pm.key() == want]
        if not maps:
            raise MinirunError(f"no public port '{want}' published for {rec.name}")
        for pm in maps:
            click.echo(f"{pm.host_ip}:{pm.host_port}")
        return
    for pm in maps:
        click.echo(pm.docker())
