# SPDX-License-Identifier: Apache-2.0
"""Monitoring (``pg_replication:monitoring``): what each host runs and what Prometheus
scrapes, derived from the plan; and Barman's metrics in Prometheus' text format, from
``barman -f json``'s answers.

Every server runs postgres_exporter with the formula's queries (``pg_replication_*``
metrics, scraped live); a backup host runs node_exporter, whose textfile collector reads
the ``barman_*`` metrics a cron job writes (:func:`barman_metrics`). The host named by
``monitoring:prometheus:host`` runs Prometheus with a scrape job per exporter kind.

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
schema = _sibling("pg_replication_schema")
_barman_metrics = _sibling("pg_replication_barman_metrics")

KEY = f"{schema.KEY}:monitoring"
# Barman's metrics file, in the node exporter's textfile directory.
BARMAN_METRICS_FILE = _barman_metrics.METRICS_FILE
# The backup host's metrics script (pg_replication/monitoring/files/barman-metrics.py), with
# the metric code it loads (_utils/pg_replication_barman_metrics.py) beside it.
BARMAN_METRICS_SCRIPT = "/usr/local/lib/pg_replication/barman-metrics"
# The hosts that run an exporter (a server's postgres_exporter, a backup host's node_exporter).
EXPORTER_ROLES = ("primary", "standby", "barman")
# monitoring:tls's files, in monitoring:tls_dir: this host's certificate and key (an
# exporter host's), each exporter's web configuration, the CA (Prometheus' host).
TLS_FILES = {
    "cert": "server.crt",
    "key": "server.key",
    "ca": "ca.crt",
    "postgres_exporter_web": "postgres-exporter-web.yml",
    "node_exporter_web": "node-exporter-web.yml",
}


def _tls_on(config):
    monitoring = config.get("monitoring") or {}
    return bool(monitoring.get("enabled") and monitoring.get("tls"))


def tls_roles(config):
    """The roles whose ``tls:hosts`` certificates the plan checks: every exporter host's
    with ``monitoring:tls`` on (a backup host's node_exporter serves https too)."""
    return EXPORTER_ROLES if _tls_on(config) else ("primary", "standby")


def check(config, hosts, errors):
    """The Prometheus host, when there is one, is a host of the pillar; ``monitoring:tls``
    needs the cluster's CA and every exporter host's certificate and key."""
    monitoring = config.get("monitoring") or {}
    host = (monitoring.get("prometheus") or {}).get("host")
    if monitoring.get("enabled") and host is not None and host not in hosts:
        errors.append(f"{KEY}:prometheus:host: {host!r} is not in {schema.KEY}:hosts")
    if not _tls_on(config):
        return
    tls = config.get("tls") or {}
    if not tls.get("ca_cert"):
        errors.append(f"{KEY}:tls: needs {schema.KEY}:tls:ca_cert (and every exporter host's certificate and key)")
        return
    for host in sorted(hosts.values(), key=lambda h: h["id"]):
        if host["role"] == "barman" and not (tls.get("hosts") or {}).get(host["id"]):
            errors.append(
                f"{schema.KEY}:tls:hosts:{host['id']}: a backup host needs its certificate and key"
                f" with {KEY}:tls on (its node_exporter serves https)"
            )


def _listen(exporter, host):
    return f"{exporter.get('listen_address') or host['address']}:{exporter['port']}"


def tls_files(monitoring):
    """Where ``monitoring:tls``'s files go (None with it off)."""
    if not monitoring.get("tls"):
        return None
    return {name: f"{monitoring['tls_dir']}/{filename}" for name, filename in TLS_FILES.items()}


def targets(config, hosts):
    """Prometheus' scrape jobs: every server's postgres_exporter and every backup host's
    node_exporter, labelled with the minion id, its role in the pillar and the cluster;
    with ``monitoring:tls``, over https verified against the cluster's CA."""
    monitoring, cluster = config["monitoring"], config.get("cluster", "main")
    jobs = {"postgres": [], "node": []}
    for host in sorted(hosts.values(), key=lambda h: h["id"]):
        kind = "postgres" if host["role"] in ("primary", "standby") else "node"
        exporter = monitoring["postgres_exporter" if kind == "postgres" else "node_exporter"]
        labels = {"minion": host["id"], "pg_replication_role": host["role"], "cluster": cluster}
        jobs[kind].append({"targets": [_listen(exporter, host)], "labels": labels})
    files = tls_files(monitoring)
    https = {"scheme": "https", "tls_config": {"ca_file": files["ca"]}} if files else {}
    return [dict({"job_name": name, "static_configs": configs}, **https) for name, configs in jobs.items() if configs]


def minion(config, hosts, me, downstream, barman_servers):
    """What this minion runs for monitoring (``{"enabled": False}`` when it is off)."""
    monitoring = dict(config.get("monitoring") or {})
    if not monitoring.get("enabled") or not me:
        return {"enabled": False}
    prometheus = dict(monitoring["prometheus"])
    prometheus["here"] = prometheus.get("host") == me["id"]
    prometheus["scrape_configs"] = targets(config, hosts) if prometheus["here"] else []
    server = me["role"] in ("primary", "standby")
    monitoring.update(
        {
            "prometheus": prometheus,
            "postgres_exporter": dict(
                monitoring["postgres_exporter"], listen=_listen(monitoring["postgres_exporter"], me)
            ),
            "node_exporter": dict(monitoring["node_exporter"], listen=_listen(monitoring["node_exporter"], me)),
            # This host's exporters.
            "server": server,
            "backup": me["role"] == "barman",
            # The standbys streaming from this server, with their slots (downstream metrics).
            "downstream": [{"application_name": h["application_name"], "slot": h["slot"]} for h in downstream],
            # Barman's slots of this cluster (their slot metrics say kind="barman").
            "barman_slots": sorted({s["slot_name"] for s in barman_servers if not s["external"]}),
            # On a backup host: each Barman server's maximum backup age (seconds).
            "barman_max_ages": {s["name"]: config["barman"]["backup_max_age"] for s in barman_servers}
            if me["role"] == "barman"
            else {},
            "barman_metrics_file": BARMAN_METRICS_FILE,
            "barman_metrics_script": BARMAN_METRICS_SCRIPT,
            # monitoring:tls's files (None: plain http).
            "tls_files": tls_files(monitoring),
        }
    )
    return monitoring


# --------------------------------------------------------------------------- Barman's metrics
# (_utils/pg_replication_barman_metrics.py: standalone, the backup host's metrics script runs it)


def server_samples(server, checks, backups, max_age, now):
    """One Barman server's samples (``pg_replication_barman_metrics.server_samples``)."""
    return _barman_metrics.server_samples(server, checks, backups, max_age, now)


def barman_metrics(samples, now):
    """The textfile collector's text (``pg_replication_barman_metrics.barman_metrics``)."""
    return _barman_metrics.barman_metrics(samples, now)
