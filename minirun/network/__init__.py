"""Container networking: bridges, veth pairs, addresses, published ports, names.

Import-light on purpose: ``--network none`` and ``--network host`` never load pyroute2
(0.1-0.25 s of import); only the modules that talk netlink (``netlink.py``) import it,
and only inside their functions.

::

    config.py   network records (<store>/networks/<name>.json) and subnet choice
    ipam.py     the endpoint state: one JSON file under a file lock; IPs, ports, proxies
    netlink.py  pyroute2: bridge, veth pair, eth0 in the container's namespace
    nat.py      IP forwarding, masquerade and bridge isolation (nftables or iptables)
    ports.py    -p parsing, host port reservation, the userland proxy process
    proxy.py    that proxy: a stdlib-only program, one per container with ports
    dns.py      /etc/hosts and /etc/resolv.conf contents
    attach.py   the API the container lifecycle calls: prepare, attach, release, reconcile;
                and network connect/disconnect (more networks per container: ethN)
"""
