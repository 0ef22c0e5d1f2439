# SPDX-License-Identifier: Apache-2.0
"""The cluster as the master's runners see it: every member's answer to
``pg_replication.member`` (its shape: ``pg_replication_member``), the pillar's hosts and
roles, where each server stands; and the pillar change a change of roles makes.

The runner asks the minions and gives their answers to :func:`from_answers`; everything
here reads them only. Pure logic; runs on the master's Python.
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
member = _sibling("pg_replication_member")

FORMULA = "pg_replication"


class Cluster:
    """Every member's record (``{minion id: record}``): the pillar's hosts and roles, and
    where each server stands."""

    def __init__(self, members):
        self.members = members
        self.plan = next(iter(members.values()))["plan"]
        self.hosts = self.plan["hosts"]

    def plan_of(self, host):
        record = self.members.get(host)
        return record["plan"] if record else None

    def server(self, host):
        """The running state of ``host``'s server: None if its minion did not answer."""
        record = self.members.get(host)
        return record.get("server") if record else None

    def role(self, host):
        return (self.hosts.get(host) or {}).get("role")

    def upstream(self, host, primary):
        """The server standby ``host`` streams from once ``primary`` leads: the upstream the
        pillar names (cascading), or ``primary``."""
        return (self.hosts.get(host) or {}).get("upstream") or primary

    def cascading_from(self, host):
        """The standbys whose pillar names ``host`` as their upstream."""
        return sorted(h for h, spec in self.hosts.items() if spec.get("upstream") == host)

    def pillar_primary(self):
        return next(host for host, spec in self.hosts.items() if spec["role"] == "primary")

    def servers(self):
        return sorted(host for host, spec in self.hosts.items() if spec["role"] in member.SERVER_ROLES)

    def backup_hosts(self):
        return sorted(host for host, spec in self.hosts.items() if spec["role"] == "barman")

    def without_server(self):
        """The members that answered and run no PostgreSQL server (Barman's hosts)."""
        return [h for h in sorted(self.hosts) if h in self.members and self.role(h) not in member.SERVER_ROLES]

    def running_primaries(self):
        return [
            h for h in self.servers() if (self.server(h) or {}).get("running") and not self.server(h)["in_recovery"]
        ]

    def barman_server_name(self):
        """The name of Barman's server for this cluster's primary (None without Barman)."""
        for host in self.backup_hosts():
            for server in (self.plan_of(host) or {}).get("barman_servers") or ():
                if not server.get("external"):
                    return server["name"]
        return None

    def conn(self, host):
        """Keyword arguments that reach ``host``'s server over its local socket."""
        plan = self.plan_of(host) or self.plan
        return {"host": plan["socket_dir"], "port": plan["port"]}


def from_answers(answers):
    """The cluster of the minions' full returns of ``pg_replication.member`` (``{minion id:
    {"ret", "retcode"}}``): the members that answered with a record; None if none did."""
    members = {
        minion: answer["ret"]
        for minion, answer in answers.items()
        if isinstance(answer, dict) and not answer.get("retcode") and not member.problems(answer.get("ret"))
    }
    return Cluster(members) if members else None


def change(cluster, roles):
    """The ``pg_replication`` pillar after a change of roles (``{minion id: role}``): the
    roles, and what the barman section must say so that Barman keeps its server (the same
    name, the same archive) and backs up the new primary."""
    out = {"hosts": {host: {"role": role} for host, role in sorted(roles.items())}}
    new_primary = next((host for host, role in roles.items() if role == "primary"), None)
    pinned, barman = cluster.plan.get("barman_pillar") or {}, {}
    if pinned.get("primary") and roles.get(pinned["primary"]) == "standby" and new_primary:
        barman["primary"] = new_primary
    name = cluster.barman_server_name()
    if name and not pinned.get("server_name") and new_primary:  # it defaults to <primary>-streaming
        barman["server_name"] = name
    if barman:
        out["barman"] = barman
    return out


def pillar_change(change):
    """The change as lines an operator copies into the pillar."""
    return [
        f"{FORMULA}:{section}:{key}:role: {value['role']}"
        if section == "hosts"
        else f"{FORMULA}:{section}:{key}: {value}"
        for section in sorted(change)
        for key, value in sorted(change[section].items())
    ]
