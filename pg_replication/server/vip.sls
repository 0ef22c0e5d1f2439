# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# The floating address (pg_replication:vip): held by the primary only; a standby that holds
# it drops it. With systemd, a server whose PostgreSQL dies (not a clean stop) drops it at
# once (ExecStopPost); switchover and failover move it (salt-run pg_replication.*).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .service
{%- if pg.role == 'primary' %}
  - .primary
{%- endif %}
{%- if grains.get('init') == 'systemd' %}

pg_replication-vip-drop-script:
  file.managed:
    - name: {{ pg.routing.vip_drop_script }}
    - contents: {{ pg.routing.vip_drop_lines | json }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

pg_replication-vip-drop-unit:
  file.managed:
    - name: /etc/systemd/system/{{ pg.service_name }}.service.d/pg_replication-vip.conf
    - contents:
      - '[Service]'
      - ExecStopPost={{ pg.routing.vip_drop_script }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

pg_replication-vip-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pg_replication-vip-drop-unit
{%- endif %}

# arping checks that no other host holds the address before it is added, then announces it.
pg_replication-vip-arping:
  pkg.installed:
    - name: {{ pg.pkgs.arping }}

pg_replication-vip:
  pg_replication.vip:
    - name: {{ pg.routing.vip }}
    - prefix: {{ pg.routing.vip_prefix }}
    - beside: {{ pg.me.address }}
    - present: {{ pg.routing.holds_vip }}
    - require:
      - pkg: pg_replication-vip-arping
      - sls: {{ tplroot }}.server.service
{%- if pg.role == 'primary' %}
      - sls: {{ tplroot }}.server.primary
{%- endif %}
