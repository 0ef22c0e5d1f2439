# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Before anything is configured: the running cluster agrees with the pillar, or the run stops
# here with the command that reconciles them (a highstate never promotes, demotes or rewinds).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set peers = {} %}
{%- if pg.role == 'primary' %}
{%-   for standby in pg.standbys %}
{%-     do peers.update({standby.id: standby.address}) %}
{%-   endfor %}
{%- endif %}

include:
  # TLS: the CA this check connects to the others with.
  - {{ tplroot }}.tls

# A server the watchdog fenced (it stopped itself, cut off as a primary) stays stopped until
# salt-run pg_replication.rejoin makes it a standby and removes the marker.
pg_replication-not-fenced:
  pg_replication.not_fenced:
    - name: {{ pg.minion_id }}
    - order: 1
    - failhard: True

pg_replication-roles-agree:
  pg_replication.role_agrees:
    - name: {{ pg.minion_id }}
    - role: {{ pg.role }}
    - primary: {{ pg.primary.id }}
    - peers: {{ peers | json }}
    - user: {{ pg.replication.user }}
    - passfile: {{ pg.home }}/.pgpass
    - tls: {{ pg.peer_tls | json }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - order: 1
    - failhard: True
{%- if pg.peer_tls %}
    - require:
      - sls: {{ tplroot }}.tls
{%- endif %}
