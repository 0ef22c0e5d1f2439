# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# On every server: a physical slot for each standby that streams from it (the primary's
# standbys, or a cascading standby's on its upstream), and the slots of hosts gone from the
# pillar dropped once inactive (only those made here; Barman's own slot is in the list too).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .service
{%- for standby in pg.downstream %}

pg_replication-slot-{{ standby.slot }}:
  pg_replication.slot_present:
    - name: {{ standby.slot }}
    - reserve_wal: True
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service
    - require_in:
      - pg_replication: pg_replication-slots-follow-the-pillar
{%-   if pg.role == 'primary' %}
      # primary.sls: a standby that can log in finds its slot. By ID: the role must not wait
      # on slots-follow-the-pillar below, which fails while a gone host still streams.
      - pg_replication: pg_replication-replication-role
{%-   endif %}
{%- endfor %}

pg_replication-slots-follow-the-pillar:
  pg_replication.slots_follow:
    - name: {{ pg.home }}/.pg_replication-slots-{{ pg.version }}-{{ pg.cluster }}.json
    - slots: {{ pg.served_slots | json }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service
