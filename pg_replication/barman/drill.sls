# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Restore drills (pg_replication:barman:drill): the drill's directory under Barman's home (its
# scratch copies and results, private to barman), its configuration file (all a drill needs:
# cron runs it with salt-call --local, without the pillar), and root's cron line on the
# pillar's schedule. Without drills: no cron line, no configuration (results stay).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set drill = pg.barman.drill %}
{#- salt-call: the one beside the minion's Python, else on the PATH. #}
{%- set beside = salt['file.join'](salt['file.dirname'](grains['pythonexecutable']), 'salt-call') %}
{%- set salt_call = beside if salt['file.file_exists'](beside) else 'salt-call' %}

include:
  - .dirs

{%- if drill %}

pg_replication-barman-drill-dir:
  file.directory:
    - name: {{ drill.dir }}
    - user: barman
    - group: barman
    - mode: '0750'
    - require:
      - file: pg_replication-barman-dirs

# The backup marker hook (Barman's pre_backup_script of this cluster's server): a row on
# the primary before each backup, counted by the drill in the restored copy.
pg_replication-barman-drill-marker-hook:
  file.managed:
    - name: {{ pg.barman.marker_hook }}
    - source: salt://{{ tplroot }}/barman/files/backup_marker.py
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'
    - require_in:
{%-   for server in pg.barman_servers if server.marker_script %}
      - file: pg_replication-barman-server-{{ server.name }}
{%-   endfor %}

pg_replication-barman-drill-config:
  file.serialize:
    - name: {{ drill.config }}
    - serializer: json
    - dataset: {{ drill.file | json }}
    - user: root
    - group: barman
    - mode: '0640'
    - require:
      - file: pg_replication-barman-drill-dir
{%- endif %}

{%- if drill and drill.cron %}

pg_replication-barman-drill-cron:
  cron.present:
    - name: {{ salt_call }} {{ drill.command }}
    - identifier: {{ drill.identifier }}
    - user: root
{%-   for field, value in drill.cron | dictsort %}
    - {{ field }}: {{ value | json }}
{%-   endfor %}
    - require:
      - file: pg_replication-barman-drill-config
{%- elif salt['cmd.has_exec']('crontab') %}

pg_replication-barman-drill-cron:
  cron.absent:
    - name: barman.drill
    - identifier: pg_replication-barman-drill
    - user: root
{%- endif %}

{%- if not drill %}

pg_replication-barman-drill-config:
  file.absent:
    - name: {{ pg.barman.home }}/pg_replication-drill/drill.json

pg_replication-barman-drill-marker-hook:
  file.absent:
    - name: {{ pg.barman.marker_hook }}
{%- endif %}
