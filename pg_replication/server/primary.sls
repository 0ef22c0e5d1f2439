# -*- coding: utf-8 -*-
# vim: ft=sls
# On the primary: a physical slot per standby, then the replication role. The role comes
# last, so a standby that can log in always finds its slot.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .service

{%- for standby in pg.standbys %}

pg_replication-slot-{{ standby.slot }}:
  pg_replication.slot_present:
    - name: {{ standby.slot }}
    - reserve_wal: True
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - pg_replication: pg_replication-restart-if-pending
    - require_in:
      - pg_replication: pg_replication-replication-role
{%- endfor %}

pg_replication-replication-role:
  pg_replication.role_present:
    - name: {{ pg.replication.user }}
    - password: {{ pg.replication.password | json }}
    - login: True
    - replication: True
    - groups: []
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - pg_replication: pg_replication-restart-if-pending
