# -*- coding: utf-8 -*-
# vim: ft=sls
# On the primary: a physical slot per standby, the slots of hosts gone from the pillar
# dropped, then the replication role. The role comes last, so a standby that can log in
# always finds its slot.
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
      - pg_replication: pg_replication-slots-follow-the-pillar
{%- endfor %}

# Slots of hosts gone from the pillar are dropped once inactive (only those made here).
pg_replication-slots-follow-the-pillar:
  pg_replication.slots_follow:
    - name: {{ pg.home }}/.pg_replication-slots-{{ pg.version }}-{{ pg.cluster }}.json
    - slots: {{ pg.primary_slots | json }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - pg_replication: pg_replication-restart-if-pending

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
      - pg_replication: pg_replication-restart-if-pending

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
      - pg_replication: pg_replication-restart-if-pending

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
      - pg_replication: pg_replication-restart-if-pending
{%- endif %}
