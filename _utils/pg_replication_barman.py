# SPDX-License-Identifier: Apache-2.0
"""Barman on the backup host and its copy to an object store (barman:cloud): one server
section per backed-up primary, the commands cron and Barman's hooks run, the roles' grants,
and a standby's restore_command from the object store's WAL.

Functions append ``"pillar:key: message"`` to ``errors`` for each fault. Pure logic; runs on
the minion's Python (3.9 on Debian 11).
"""

import copy
import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
schema = _sibling("pg_replication_schema")
tls = _sibling("pg_replication_tls")
drill = _sibling("pg_replication_drill")
settings_util = _sibling("pg_replication_settings")
KEY = schema.KEY
# pg_basebackup's client-side compressions that need pg_basebackup 15+.
BACKUP_COMPRESSIONS_FROM_15 = ("lz4", "zstd")
# The profile barman-cloud-* read in the credentials file (AWS_SHARED_CREDENTIALS_FILE).
CLOUD_PROFILE = "pg_replication"
# Its file, in the home of the user that runs them (its own, not ~/.aws/credentials).
CLOUD_CREDENTIALS = ".pg_replication-cloud-credentials"
# The backup host's post-backup hook that runs barman-cloud-backup once a backup is DONE.
CLOUD_BACKUP_HOOK = "/usr/local/lib/pg_replication/barman-cloud-backup-when-done"
CRON_FILE = "/etc/cron.d/pg_replication-barman"
PACKAGE_CRON_FILE = "/etc/cron.d/barman"
# The package (same name on both families) with the tool Barman runs for a compression.
COMPRESSION_PKGS = {"bzip2": "bzip2", "pigz": "pigz", "lz4": "lz4", "zstd": "zstd"}


def plan_barman(config, hosts, primary, errors, tls_on=False):
    """Barman settings for the backup host: one server section for this cluster's primary,
    plus one per entry of ``barman:servers`` (primaries of other clusters)."""
    barman = copy.deepcopy(config["barman"])
    barman["compression_pkgs"] = []
    barman["marker_hook"] = drill.MARKER_HOOK  # barman:drill's backup marker (pre_backup_script)
    barman["retired_servers"] = []
    servers = []
    if not any(h["role"] == "barman" for h in hosts.values()):
        return barman, servers
    install = barman.setdefault("install", {})
    method = install.setdefault("method", "pkg")
    for path_key in ("venv", "link") if method == "pip" else ():
        if not install.get(path_key):
            errors.append(f"{KEY}:barman:install:{path_key}: an absolute path is required for method pip")
    # The barman command cron runs (pip: the link to the virtualenv's entry point).
    barman["bin"] = install.get("link") if method == "pip" else "/usr/bin/barman"
    barman["cron_command"] = syntax.shell_words(barman_words(barman, "cron"))
    barman["cron_test"] = syntax.shell_words(["test", "-x", barman["bin"]])
    # The formula's cron.d file (no dot in the name: Debian's cron skips those), and the one
    # Barman's package ships (a conffile on Debian), which the formula leaves to the package.
    barman["cron_file"] = CRON_FILE
    barman["package_cron_file"] = PACKAGE_CRON_FILE
    # Scheduled base backups of every server (Barman's own `backup all`), from cron.
    barman["backup_command"] = syntax.shell_words(barman_words(barman, "backup", "all"))
    # barman check's "backup maximum age", in Barman's whole days.
    barman["last_backup_maximum_age"] = f"{max(1, -(-int(barman.get('backup_max_age') or 86400) // 86400))} DAYS"
    target = barman.get("primary") or (primary or {}).get("id")
    if target and target not in hosts:
        errors.append(f"{KEY}:barman:primary: {target!r} is not a host in {KEY}:hosts")
    elif target and hosts[target]["role"] != "primary":
        errors.append(f"{KEY}:barman:primary: host {target!r} is not a primary")
    elif target:
        spec = {"primary": target, "address": hosts[target]["address"]}
        spec.update(backup_source(barman, hosts, target, errors))
        name = barman.get("server_name") or f"{target}-streaming"
        if not syntax.SERVER_RE.fullmatch(name):
            errors.append(f"{KEY}:barman:server_name: {name!r} is not a valid Barman server name")
        tls_ca = tls.paths(barman["config_dir"])["ca_file"] if tls_on else None
        servers.append(_server(config, barman, errors, f"{KEY}:barman", name, spec, tls_ca))
    for name, spec in (barman.get("servers") or {}).items():
        key = f"{KEY}:barman:servers:{name}"
        if any(s["name"] == name for s in servers):
            errors.append(f"{key}: server name {name!r} is already this cluster's server")
        spec = dict(spec, external=True, primary=spec.get("primary") or spec.get("address"))
        servers.append(_server(config, barman, errors, key, name, spec))
    barman["retired_servers"] = _retired(config, barman, servers, hosts, target, errors)
    _incremental(barman, servers, errors)
    if barman.get("cloud"):
        _cloud_hooks(barman, servers, method, errors)
    tools = {s[k] for s in servers for k in ("compression", "backup_compression")}
    barman["compression_pkgs"] = sorted(COMPRESSION_PKGS[t] for t in tools if t in COMPRESSION_PKGS)
    barman["drill"] = drill.plan_drill(barman, servers, errors)
    return barman, servers


def _retired(config, barman, servers, hosts, primary, errors):
    """barman:retired: a server file each, as the cluster's server file would be for that
    name and version, with ``active = false``: Barman restores from it and does nothing else
    (no backup, no receive-wal, no retention: `barman cron` skips inactive servers)."""
    retired = []
    for name, version in sorted((barman.get("retired") or {}).items()):
        key = f"{KEY}:barman:retired:{name}"
        if any(s["name"] == name for s in servers):
            errors.append(f"{key}: {name!r} is an active Barman server (give the active one another server_name)")
            continue
        spec = {"primary": primary, "address": hosts[primary]["address"] if primary in hosts else "127.0.0.1",
                "version": version}  # fmt: skip
        server = _server(config, barman, errors, key, name, spec)
        server.update(retired=True, keep={})  # not the cluster's keeps
        server["description"] = f"retired: PostgreSQL {server['version']} backups of {primary}, kept for restores"
        retired.append(server)
    return retired


def backup_source(barman, hosts, primary, errors):
    """Where barman:backup_from takes this cluster's base backups: ``{}`` from the primary, or
    the standby's id and address (Barman 3.12+: backup from a standby, WAL from the primary).
    ``standby`` picks the first standby by id that streams from the primary without a delay;
    a named host that is the primary now (after a switchover) means the primary."""
    key, wanted = f"{KEY}:barman:backup_from", barman.get("backup_from") or "primary"
    if wanted == "standby":
        candidates = [h for h in sorted(hosts) if _plain_standby(hosts[h], primary)]
        if not candidates:
            errors.append(f"{key}: standby, but no standby streams from {primary} without a delay")
            return {}
        wanted = candidates[0]
    if wanted in ("primary", primary):
        return {}
    if wanted not in hosts or hosts[wanted]["role"] != "standby":
        errors.append(f"{key}: {wanted!r} is not primary, standby or a standby in {KEY}:hosts")
        return {}
    return {"backup_standby": wanted, "backup_address": hosts[wanted]["address"]}


def _plain_standby(host, primary):
    return (
        host["role"] == "standby"
        and host.get("upstream") in (None, primary)
        and settings_util.apply_delay_seconds(host.get("settings")) == 0
    )


def barman_words(barman, *args):
    """A quiet barman command line (words) with the pillar's binary and configuration file."""
    return [barman["bin"], "-c", barman["config_file"], "-q", *args]


def _incremental(barman, servers, errors):
    """barman:incremental_schedule: cron takes an incremental backup of each server on
    PostgreSQL 17+ (pg_basebackup --incremental over WAL summaries: the servers run
    summarize_wal); a full one when no backup is eligible as its parent yet (none taken with
    WAL summaries). Barman combines the chain in its staging directory to restore it."""
    if not barman.get("incremental_schedule"):
        return
    for server in servers:
        if server["version"] < 17:
            continue
        if server["backup_compression"] != "none":
            errors.append(f"{server['key']}:backup_compression: incremental backups need none")
        incremental = syntax.shell_words(barman_words(barman, "backup", "--incremental", "latest", server["name"]))
        full = syntax.shell_words(barman_words(barman, "backup", server["name"]))
        server["incremental"] = True
        server["incremental_command"] = f"{incremental} || {full}"


def _server(config, barman, errors, key, name, spec, tls_ca=None):
    """One Barman server section: the pillar's barman settings, overridden per server, with
    the option values its server file holds."""
    if name in ("all", "barman"):
        errors.append(f"{key}: {name!r} is reserved by Barman; choose another server name")
    server = {k: spec.get(k, barman.get(k)) for k in schema.BARMAN_SERVER_DEFAULTS}
    server.update(name=name, key=key, primary=spec.get("primary"), external=bool(spec.get("external")))
    server.update(cloud_wal_script=None, cloud_backup_script=None, cloud_retention_command=None)  # barman:cloud
    # `barman keep`: this cluster's from barman:keep, another's from its barman:servers entry.
    server["keep"] = dict((spec if spec.get("external") else barman).get("keep") or {})
    server["incremental"] = False  # barman:incremental_schedule (_incremental, once its version is known)
    server["marker_script"] = None  # barman:drill's backup marker (pg_replication_drill.plan_drill)
    server["retired"] = False  # barman:retired (_retired)
    server["port"] = int(spec.get("port") or config["port"])
    server["version"] = int(spec.get("version") or config["version"])
    for user_key, password_key in (("user", "password"), ("streaming_user", "streaming_password")):
        schema.check_password(errors, f"{key}:{password_key}", server[user_key], server[password_key])
    server["address"] = str(spec["address"])
    server["bin_dir"] = schema.expand(config["bin_dir"], server["version"], "")
    server["client_pkg"] = schema.expand(config["pkgs"]["client"], server["version"], "")
    server["server_pkg"] = schema.expand(config["pkgs"]["server"], server["version"], "")
    server["retention_policy"] = " ".join(str(server["retention_policy"]).upper().split())
    if server["backup_compression"] in BACKUP_COMPRESSIONS_FROM_15 and server["version"] < 15:
        errors.append(
            f"{key}:backup_compression: {server['backup_compression']} needs PostgreSQL 15 or later"
            f" (this server runs {server['version']}); use gzip or none"
        )
    common = {"host": server["address"], "port": server["port"]}
    if tls_ca and not server["external"]:  # this cluster's primary: TLS only
        common.update(tls.conninfo(tls_ca, server["version"]))
    primary_conninfo = syntax.conninfo(**common, user=server["user"], dbname="postgres")
    streaming_conninfo = syntax.conninfo(**common, user=server["streaming_user"])
    # Written before each backup by the pre-backup hook (the drill counts it): on the primary.
    server["marker_conninfo"] = primary_conninfo
    server["backup_standby"] = spec.get("backup_standby")
    where = f"{server['address']}:{server['port']}"
    server["description"] = f"PostgreSQL {server['version']} on {server['primary']} ({where}), streaming"
    if server["backup_standby"]:
        # Base backups from the standby; WAL from the primary's slot; WAL switches on the primary.
        on_standby = dict(common, host=spec["backup_address"])
        server["conninfo"] = syntax.conninfo(**on_standby, user=server["user"], dbname="postgres")
        server["streaming_conninfo"] = syntax.conninfo(**on_standby, user=server["streaming_user"])
        server["primary_conninfo"] = server["wal_conninfo"] = primary_conninfo
        server["wal_streaming_conninfo"] = streaming_conninfo
        server["description"] += f", base backups from {server['backup_standby']} ({spec['backup_address']})"
    else:
        server["conninfo"], server["streaming_conninfo"] = primary_conninfo, streaming_conninfo
    return server


def cloud_command(cloud, home, tool, *args):
    """A barman-cloud-* command line (words) run as the user whose home is ``home``: its
    credentials file named in the environment and picked by profile, no secret in argv."""
    words = [
        "env", f"AWS_SHARED_CREDENTIALS_FILE={home}/{CLOUD_CREDENTIALS}", f"AWS_DEFAULT_REGION={cloud['region']}",
        tool, "--cloud-provider", "aws-s3", "--profile", CLOUD_PROFILE,
    ]  # fmt: skip
    if cloud.get("endpoint_url"):
        words += ["--endpoint-url", cloud["endpoint_url"]]
    return words + list(args)


def _cloud_hooks(barman, servers, method, errors):
    """barman:cloud: each server's hook scripts copy its WAL (before Barman archives a
    segment, retried until it is stored) and each DONE base backup to the object store."""
    key = f"{KEY}:barman:cloud"
    defaults = {
        "region": "us-east-1",
        "compression": "gzip",
        "retention_policy": None,
        "retention_schedule": "0 5 * * *",
    }
    cloud = barman["cloud"] = {**defaults, **barman["cloud"]}
    cloud["backup_hook"] = CLOUD_BACKUP_HOOK
    if method != "pkg":
        errors.append(f"{key}: needs {KEY}:barman:install:method pkg (the barman-cli-cloud package)")
    flags = [] if cloud["compression"] == "none" else ["--" + cloud["compression"]]
    for server in servers:
        if server["backup_compression"] != "none":
            errors.append(
                f"{server['key']}:backup_compression: barman-cloud-backup copies plain base backups only;"
                f" set none with {key}"
            )
        words = (cloud["destination"], server["name"])
        server["cloud_wal_script"] = syntax.shell_words(
            cloud_command(cloud, barman["home"], "barman-cloud-wal-archive", *flags, *words)
        )
        server["cloud_backup_script"] = syntax.shell_words(
            [CLOUD_BACKUP_HOOK, *cloud_command(cloud, barman["home"], "barman-cloud-backup", *flags, *words)]
        )
        # The store's retention, from cron: the copies (and their WAL) the policy no longer needs.
        policy = cloud["retention_policy"]
        delete = cloud_command(cloud, barman["home"], "barman-cloud-backup-delete", "-r", policy, *words)
        server["cloud_retention_command"] = syntax.shell_words(delete) if policy else None


def restore_command(config, barman, servers, errors):
    """A standby's restore_command with standby:restore_from_cloud: this cluster's WAL from
    barman:cloud's copy (barman-cloud-wal-restore), as the postgres user."""
    if not (config.get("standby") or {}).get("restore_from_cloud"):
        return None
    own = [s for s in servers if not s["external"]]
    if not barman.get("cloud") or not own:
        errors.append(f"{KEY}:standby:restore_from_cloud: needs a barman host and {KEY}:barman:cloud")
        return None
    words = cloud_command(barman["cloud"], config["home"], "barman-cloud-wal-restore")
    words += [barman["cloud"]["destination"], own[0]["name"]]
    return syntax.shell_words(words) + " %f %p"


def barman_grants(version):
    """Memberships and EXECUTE grants a non-superuser barman role needs (Barman docs)."""
    if version >= 15:
        return {
            "groups": ["pg_checkpoint", "pg_read_all_settings", "pg_read_all_stats"],
            "execute": [
                "pg_backup_start(text, boolean)",
                "pg_backup_stop(boolean)",
                "pg_switch_wal()",
                "pg_create_restore_point(text)",
            ],
        }
    return {
        "groups": ["pg_read_all_settings", "pg_read_all_stats"],
        "execute": [
            "pg_start_backup(text, boolean, boolean)",
            "pg_stop_backup()",
            "pg_stop_backup(boolean, boolean)",
            "pg_switch_wal()",
            "pg_create_restore_point(text)",
        ],
    }


def cloud_pkgs(plan):
    """barman-cloud's packages where a barman-cloud tool runs: the backup host with barman:cloud,
    and every server with standby:restore_from_cloud (a switchover makes a primary a standby)."""
    from_cloud = (plan.get("standby") or {}).get("restore_from_cloud") and plan["restore_command"]
    runs_a_tool = plan["barman"].get("cloud") if plan["role"] == "barman" else from_cloud
    return list(plan["barman"].get("cloud_pkgs") or []) if plan["role"] and runs_a_tool else []


def cloud_credentials(plan):
    """Where barman:cloud's key pair goes on this host (the home of the user running the
    tools), or None where no barman-cloud tool runs."""
    cloud_home = plan["barman"]["home"] if plan["role"] == "barman" else plan["home"]
    return f"{cloud_home}/{CLOUD_CREDENTIALS}" if plan["cloud_pkgs"] else None
