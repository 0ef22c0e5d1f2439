# -*- coding: utf-8 -*-
# vim: ft=yaml
---
# Kitchen: each suite is one host of this cluster (its minion id picks the role). The
# distribution's PostgreSQL (Debian 12: 15), so that a converge needs no internet;
# cluster-upstream.sls is the variant from the PostgreSQL project's repository.
pg_replication:
  version: 15
  upstream_repo: false
  network: 192.0.2.0/24
  hosts:
    master:
      role: primary
      address: 192.0.2.101
    standby:
      role: standby
      address: 192.0.2.102
      slot: standby_slot
    backup:
      role: barman
      address: 192.0.2.103
  replication:
    password: kitchen-replication-secret
  barman:
    server_name: master-streaming
    password: kitchen-barman-secret
    streaming_password: kitchen-streaming-secret
