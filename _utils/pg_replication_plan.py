# SPDX-License-Identifier: Apache-2.0
"""Validate the ``pg_replication`` pillar and derive what each minion must do.

Pure logic (no Salt, no PostgreSQL): the execution module exposes it as
``pg_replication.plan`` so that ``map.jinja`` fails at render time, before any state runs,
with a message naming the pillar key at fault.

:func:`build` runs the steps; each concern has its own file: the schema
(``pg_replication_schema``), the topology (``pg_replication_topology``), TLS
(``pg_replication_tls``), Barman and barman:cloud (``pg_replication_barman``) and the files
written from the plan (``pg_replication_render``). Every string the formula writes from
pillar values is built with the escapes of ``pg_replication_syntax``.

Runs on the minion's Python (3.9 on Debian 11): no 3.10+ features.
"""

import copy
import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
schema = _sibling("pg_replication_schema")
topology = _sibling("pg_replication_topology")
tls = _sibling("pg_replication_tls")
certs = _sibling("pg_replication_certs")
barman = _sibling("pg_replication_barman")
render = _sibling("pg_replication_render")
postgres = _sibling("pg_replication_postgres")
apps = _sibling("pg_replication_apps")
monitoring = _sibling("pg_replication_monitoring")
routing = _sibling("pg_replication_routing")
fence = _sibling("pg_replication_fence")
ssh = _sibling("pg_replication_ssh")

# The entry points and rules others read from here.
KEY, SCHEMA, PlanError, RESERVED_SETTINGS = schema.KEY, schema.SCHEMA, schema.PlanError, schema.RESERVED_SETTINGS
redact, validate = schema.redact, schema.validate
MINE_FUNCTION, mine_request = topology.MINE_FUNCTION, topology.mine_request
cloud_command, barman_grants = barman.cloud_command, barman.barman_grants
REWIND_GRANTS = postgres.REWIND_GRANTS
# The pillar's application keys: the plan holds them checked, under "apps" and "hba".
APP_KEYS = ("databases", "roles", "privileges", "absent")

# The PostgreSQL major version each distribution release ships; other versions need
# pg_replication:upstream_repo. (os grain, osmajorrelease grain) -> version.
DISTRIBUTION_VERSIONS = {
    ("Debian", 11): 13,
    ("Debian", 12): 15,
    ("Debian", 13): 17,
    ("Debian", 14): 18,
    ("Ubuntu", 22): 14,
    ("Ubuntu", 24): 16,
}


def build(config, minion_id, grains=None, mine=None):
    """Return the validated plan for ``minion_id``; raise PlanError listing every fault.
    ``grains``: the minion's ``os``, ``osmajorrelease`` and ``init``; ``mine``: the Salt
    mine's :data:`MINE_FUNCTION` data, ``{minion id: [address, ...]}``, for the hosts the
    pillar gives no address."""
    grains = grains or {}
    errors = []
    schema.check(config, errors)
    _stop_if(errors)
    config = _normalized(config)
    hosts = topology.host_entries(config, mine, errors)
    _stop_if(errors)
    cluster = _cluster(config, hosts, errors)
    _stop_if(errors)
    plan = _minion_plan(config, cluster, minion_id)
    _add_files(plan)
    if grains.get("init") == "systemd" and plan.get("systemd_service_name"):
        # systemd: the cluster's own unit (the umbrella unit only starts clusters it saw at boot)
        plan["service_name"] = plan["systemd_service_name"]
    _check_distribution(plan, grains, errors)
    _stop_if(errors)
    return plan


def _stop_if(errors):
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))


def _normalized(config):
    """A copy of the checked pillar with its version, port, cluster and network filled in."""
    config = copy.deepcopy(config)
    config["version"], config["port"] = int(config["version"]), int(config.get("port", 5432))
    config.setdefault("cluster", "main")
    if config.get("network"):
        config["network"] = schema.network(config["network"])
    return config


def _cluster(config, hosts, errors):
    """What the whole cluster is, the same for every minion: roles, upstreams, TLS, Barman's
    servers, slots, synchronous standbys; and the pillar's paths expanded."""
    primary, primaries, standbys, backup_hosts = topology.by_role(hosts, errors)
    topology.check_upstreams(hosts, primary, errors)
    topology.check_host_settings(hosts, errors)
    replication = config.setdefault("replication", {})
    if standbys:
        schema.check_password(
            errors, f"{KEY}:replication:password", replication.get("user"), replication.get("password")
        )
    # Barman servers first: each expands the version templates with its own version.
    clients = routing.cluster_routing(config, hosts, errors)
    tls_on, warnings = tls.enabled(config, hosts, errors), []
    if tls_on:
        # A pooler's certificate is checked like a server's (PgBouncer serves TLS with it).
        pooler_ids = [p["id"] for p in clients["poolers"]]
        certs.check(config["tls"], hosts, errors, warnings, roles=monitoring.tls_roles(config), also=pooler_ids)
        if pooler_ids and clients["target"] == "vip" and clients["vip"]:
            certs.check_pooler_vip(config["tls"], hosts, clients["vip"], errors)
    backup, barman_servers = barman.plan_barman(config, hosts, primary, errors, tls_on)
    topology.check_slots(hosts, barman_servers, errors)
    # From Barman over SSH, or from barman:cloud's copy (both: an error).
    restore_command = ssh.restore_command(config, backup_hosts, barman_servers, errors) or barman.restore_command(
        config, backup, barman_servers, errors
    )
    topology.check_headroom(config, standbys, backup_hosts, errors)
    synchronous_standby_names = topology.synchronous(config, hosts, errors)
    app_objects, app_hba = apps.plan(config, errors), apps.hba(config, tls_on, errors)
    monitoring.check(config, hosts, errors)
    fence.check_pillar(config.get("ha"), errors)
    schema.expand_paths(config, errors)
    return {"routing": clients, "hosts": hosts, "primary": primary, "primaries": primaries, "standbys": standbys,
            "backup_hosts": backup_hosts, "tls": tls_on, "barman": backup, "barman_servers": barman_servers,
            "restore_command": restore_command, "synchronous_standby_names": synchronous_standby_names,
            "warnings": warnings, "apps": app_objects, "app_hba": app_hba}  # fmt: skip


def _minion_plan(config, cluster, minion_id):
    """The cluster as ``minion_id`` sees it: its role, its upstream and downstream, its slots."""
    hosts, primary, barman_servers = cluster["hosts"], cluster["primary"], cluster["barman_servers"]
    version = config["version"]
    plan = {k: v for k, v in config.items() if k not in ("settings", "hosts", *APP_KEYS)}
    me = hosts.get(minion_id)
    server = bool(me) and me["role"] in ("primary", "standby")
    downstream = topology.downstream(hosts, primary, minion_id) if server else []
    plan.update(
        {
            "minion_id": minion_id,
            "role": me["role"] if me else None,
            "me": me,
            "hosts": hosts,
            "primary": primary,
            "standbys": cluster["standbys"],
            # The server a standby streams from: the primary, or another standby (cascading).
            "upstream": hosts[me.get("upstream") or primary["id"]] if me and me["role"] == "standby" else None,
            # The standbys that stream from this server, and the slots it serves.
            "downstream": downstream,
            "served_slots": topology.served_slots(downstream, barman_servers, me),
            "backup_hosts": cluster["backup_hosts"],
            "barman": cluster["barman"],
            "barman_servers": barman_servers,
            "barman_grants": barman.barman_grants(version),
            # The cluster's settings, and this host's own over them.
            "settings": render.settings(config, (me or {}).get("settings")),
            # Databases, roles, privileges (made on the primary) and the absent lists.
            "apps": cluster["apps"],
            "synchronous_standby_names": cluster["synchronous_standby_names"],
            "restore_command": cluster["restore_command"],
            # What the pillar does that works but will not for long (a certificate near expiry).
            "warnings": cluster["warnings"],
            # With TLS: where this host's TLS files go (a backup host has the CA's only).
            "tls": tls.files(cluster["tls"], me, plan, cluster["barman"]),
            # The formula's own lines first: the applications' rules cannot override them.
            "hba": render.hba(
                config,
                cluster["primaries"] + cluster["standbys"],
                cluster["backup_hosts"],
                cluster["tls"],
                cluster["routing"]["poolers"],
            )
            + cluster["app_hba"],  # fmt: skip
            # How clients reach the primary: the VIP, PgBouncer (pg_replication_routing).
            "routing": routing.minion_routing(cluster["routing"], config, me, primary, cluster["tls"]),
            "rewind_grants": REWIND_GRANTS,
            # Automatic failover: the timings, and the self-fencing watchdog on this server.
            "ha": fence.minion_ha(config.get("ha"), hosts, me, config["port"]),
            # Prometheus' exporters, queries, scrape jobs and alerts on this host (or off).
            "monitoring": monitoring.minion(config, hosts, me, downstream, barman_servers),
            "standby_signal": postgres.uses_standby_signal(version),
            "initdb_command": render.initdb_command(plan, config["initdb_options"]),
        }
    )
    return plan


def _add_files(plan):
    """What this minion's files hold: peer connections, barman:cloud's tools and key pair,
    postgresql.conf, recovery.conf and .pgpass."""
    plan["peer_tls"] = tls.peer_conninfo(plan)
    plan["cloud_pkgs"] = barman.cloud_pkgs(plan)
    plan["cloud_credentials"] = barman.cloud_credentials(plan)
    plan["cloud_profile"] = barman.CLOUD_PROFILE
    plan["ssh"] = ssh.minion_ssh(plan)
    plan["ssh_revoked"] = ssh.revoked(plan)
    plan["conf_lines"] = render.conf_lines(plan)
    # Every setting the file holds: what the server runs with after a restart (others: defaults).
    plan["conf_settings"] = dict(render.conf_pairs(plan))
    plan["recovery_lines"] = render.recovery_lines(plan) if plan["role"] == "standby" else []
    plan["pgpass_lines"] = render.pgpass(plan)


# The Barman each distribution release packages: (os grain, osmajorrelease) -> version.
DISTRIBUTION_BARMAN = {
    ("Debian", 11): (2, 12),
    ("Debian", 12): (3, 4),
    ("Debian", 13): (3, 13),
    ("Debian", 14): (3, 20),
}
# What a server's pillar asks of Barman: (the pillar key that asks it of a server, or None
# when it does not, and the first Barman version that does it).
BARMAN_FEATURES = (
    (lambda server: f"{server['key']}:keep" if server["keep"] else None, (2, 14)),
    (lambda server: f"{KEY}:barman:incremental_schedule" if server["incremental"] else None, (3, 11)),
    # wal_conninfo (3.10), which `barman check` uses for the primary's slot from 3.12 on.
    (lambda server: f"{KEY}:barman:backup_from" if server["backup_standby"] else None, (3, 12)),
)


def _release(grains):
    """``(os grain, osmajorrelease as a number)``, or None when the grains do not say."""
    try:
        return grains.get("os"), int(grains.get("osmajorrelease"))
    except (TypeError, ValueError):
        return None


def _check_barman_features(plan, grains, errors):
    """What the pillar asks of Barman must be in the distribution's package (method pkg)."""
    release = _release(grains)
    if plan["role"] != "barman" or plan["barman"]["install"].get("method") != "pkg" or not release:
        return
    packaged = DISTRIBUTION_BARMAN.get(release)
    for asking, needed in BARMAN_FEATURES if packaged else ():
        keys = sorted({asking(server) for server in plan["barman_servers"]} - {None})
        for key in keys if packaged < needed else ():
            errors.append(
                f"{key}: needs Barman {'.'.join(map(str, needed))}+ ({release[0]} {release[1]} ships"
                f" {'.'.join(map(str, packaged))}); set {KEY}:barman:install:method pip"
            )


def _check_distribution(plan, grains, errors):
    """The versions this host installs must be the distribution's, or come upstream."""
    _check_barman_features(plan, grains, errors)
    if plan.get("upstream_repo"):
        return
    found = _release(grains)
    if not found:
        return
    os_name, release = found
    shipped = DISTRIBUTION_VERSIONS.get((os_name, release))
    if shipped is None:
        return
    needed = []
    if plan["role"] in ("primary", "standby"):
        needed.append((f"{KEY}:version", plan["version"]))
    elif plan["role"] == "barman":  # the client of each backed-up primary's version
        for server in plan["barman_servers"]:
            needed.append((server["key"] + ":version" if server["external"] else f"{KEY}:version", server["version"]))
    # Debian's release upgrade leaves the previous release's PostgreSQL installed beside the
    # new one (postgresql-common moves the cluster, or salt-run pg_replication.upgrade_major).
    kept = DISTRIBUTION_VERSIONS.get((os_name, release - 1)) if os_name == "Debian" else None
    for key, version in needed:
        if version not in (shipped, kept):
            errors.append(
                f"{key}: {os_name} {release} ships PostgreSQL {shipped}, not {version}; "
                f"set {KEY}:upstream_repo: true to install it from the PostgreSQL project's repository"
            )
