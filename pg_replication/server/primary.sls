# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# On the primary: the replication role and Barman's roles. The role comes after the slots
# (slots.sls), so a standby that can log in always finds its slot.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .service
  - .slots

pg_replication-replication-role:
  pg_replication.role_present:
    - name: {{ pg.replication.user }}
    - password_pillar: pg_replication:replication:password
    - login: True
    - replication: True
    - groups: []
    # pg_rewind against this server, when a switchover makes another host the primary.
    - execute: {{ pg.rewind_grants | json }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service

{%- if pg.backup_hosts %}

# Barman: a non-superuser role with the backup grants, and a streaming role.
pg_replication-barman-role:
  pg_replication.role_present:
    - name: {{ pg.barman.user }}
    - password_pillar: pg_replication:barman:password
    - login: True
    - replication: {{ pg.barman.user_replication }}
    - groups: {{ pg.barman_grants.groups | json }}
    - execute: {{ pg.barman_grants.execute | json }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service

pg_replication-barman-streaming-role:
  pg_replication.role_present:
    - name: {{ pg.barman.streaming_user }}
    - password_pillar: pg_replication:barman:streaming_password
    - login: True
    - replication: True
    - groups: []
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service
{%-   if pg.barman_servers | selectattr('marker_script') | list %}

# barman:drill: the table Barman's pre-backup hook writes a marker row in before each
# backup (the barman role: SELECT and INSERT only); restore drills count them.
pg_replication-backup-marker-table:
  pg_replication.backup_marker_present:
    - name: {{ pg.barman.user }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - pg_replication: pg_replication-barman-role
{%-   endif %}
{%- endif %}
