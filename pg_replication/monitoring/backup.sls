# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A backup host's Barman metrics: cron writes them from `barman -f json` (salt-call --local
# barman.write_metrics, atomically) into node_exporter's textfile directory every
# monitoring:barman_interval minutes; node_exporter (the distribution's package) serves them.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}
{#- salt-call: the pillar's, else the one beside the minion's Python, else on the PATH. #}
{%- set beside = salt['file.join'](salt['file.dirname'](grains['pythonexecutable']), 'salt-call') %}
{%- set salt_call = m.salt_call or (beside if salt['file.file_exists'](beside) else 'salt-call') %}
{%- set metrics_file = m.node_exporter.textfile_dir ~ '/' ~ m.barman_metrics_file %}
{%- set write_metrics = ['barman.write_metrics', metrics_file, "'" ~ (m.barman_max_ages | json) ~ "'"] | join(' ') %}

include:
  - {{ tplroot }}.barman

pg_replication-monitoring-node-exporter-pkg:
  pkg.installed:
    - name: {{ m.pkgs.node_exporter }}

pg_replication-monitoring-node-exporter-defaults:
  file.managed:
    - name: {{ m.node_exporter.defaults_file }}
    - source: salt://{{ tplroot }}/monitoring/files/node-exporter-defaults.jinja
    - template: jinja
    - user: root
    - group: {{ m.os_user }}
    - mode: '0640'
    - context:
        tplroot: {{ tplroot }}
    - require:
      - pkg: pg_replication-monitoring-node-exporter-pkg

pg_replication-monitoring-node-exporter:
  service.running:
    - name: {{ m.services.node_exporter }}
    - enable: True
    - require:
      - pkg: pg_replication-monitoring-node-exporter-pkg
    - watch:
      - file: pg_replication-monitoring-node-exporter-defaults

# As root: `barman -f json` runs as the barman user (barman.check, barman.list_backups).
pg_replication-monitoring-barman-cron:
  file.managed:
    - name: {{ m.cron_file }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (pg_replication): Barman's metrics for Prometheus.
        */{{ m.barman_interval }} * * * * root {{ salt_call }} --local --out=quiet --log-level=quiet {{ write_metrics }}
    - require:
      # The package makes its textfile directory (barman.write_metrics makes another one).
      - pkg: pg_replication-monitoring-node-exporter-pkg
      - sls: {{ tplroot }}.barman
