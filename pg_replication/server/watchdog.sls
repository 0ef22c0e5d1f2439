# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# The self-fencing watchdog (pg_replication:ha:mode automatic, hosts with systemd): a primary
# that reaches neither the salt-master nor a majority of the other servers for
# ha:fence_timeout writes its fence marker and stops its cluster's unit. Off (manual): a
# watchdog left from an earlier automatic mode is stopped and removed.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set ha = pg.ha %}
{%- if grains.get('init') == 'systemd' %}
{%-   if ha.watchdog %}

pg_replication-watchdog-decision:
  file.managed:
    - name: {{ ha.lib_dir }}/pg_replication_fence.py
    - source: salt://_utils/pg_replication_fence.py
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

pg_replication-watchdog-script:
  file.managed:
    - name: {{ ha.lib_dir }}/watchdog.py
    - source: salt://{{ tplroot }}/server/files/watchdog.py
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

pg_replication-watchdog-config:
  file.managed:
    - name: {{ ha.config_file }}
    - contents: {{ salt['pg_replication.watchdog_config'](ha, pg.minion_id, pg.data_dir, pg.service_name, pg.routing.get('vip_drop_script')) | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

pg_replication-watchdog-unit:
  file.managed:
    - name: {{ ha.unit_file }}
    - contents:
      - '[Unit]'
      - 'Description=pg_replication watchdog: an isolated primary stops itself'
      - 'After=network.target {{ pg.service_name }}.service'
      - ''
      - '[Service]'
      - 'ExecStart=/usr/bin/python3 {{ ha.lib_dir }}/watchdog.py {{ ha.config_file }}'
      - 'Restart=always'
      - 'RestartSec=1'
      - ''
      - '[Install]'
      - 'WantedBy=multi-user.target'
    - user: root
    - group: root
    - mode: '0644'

pg_replication-watchdog-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pg_replication-watchdog-unit

pg_replication-watchdog:
  service.running:
    - name: {{ ha.unit }}
    - enable: True
    - require:
      - module: pg_replication-watchdog-systemd-reload
    - watch:
      - file: pg_replication-watchdog-decision
      - file: pg_replication-watchdog-script
      - file: pg_replication-watchdog-config
      - file: pg_replication-watchdog-unit
{%-   elif salt['file.file_exists'](ha.unit_file) %}

pg_replication-watchdog:
  service.dead:
    - name: {{ ha.unit }}
    - enable: False

pg_replication-watchdog-unit:
  file.absent:
    - name: {{ ha.unit_file }}
    - require:
      - service: pg_replication-watchdog

pg_replication-watchdog-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pg_replication-watchdog-unit
{%-   endif %}
{%- endif %}
