# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# monitoring:beacon: the pg_replication_health beacon (_beacons/pg_replication_health.py,
# synced by the highstate) in the minion's beacons, saved to its configuration: an event on
# the master's bus when this host's role, a standby's streaming, a slot, the WAL receiver or
# a barman check item changes. docs/reactor-health.sls is a reactor that only notifies.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}

pg_replication-monitoring-beacon:
  beacon.present:
    - name: pg_replication_health
    - save: True
    - interval: {{ m.beacon.interval }}
{%- if m.server %}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
{%- else %}
    - barman_servers: {{ pg.barman_servers | map(attribute='name') | list | json }}
{%- endif %}
