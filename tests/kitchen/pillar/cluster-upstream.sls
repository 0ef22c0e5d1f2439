# -*- coding: utf-8 -*-
# vim: ft=yaml
---
# Kitchen: cluster.sls with PostgreSQL 16 from the PostgreSQL project's repository
# (apt.postgresql.org, download.postgresql.org): needs internet. RedHat platforms use it.
pg_replication:
  version: 16
  upstream_repo: true
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
