# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A backup host's Barman metrics: cron writes them from `barman -f json` (the formula's
# metrics script, no Salt: the functions of _utils/pg_replication_barman_metrics.py installed
# beside it; atomically) into node_exporter's textfile directory every
# monitoring:barman_interval minutes; node_exporter (the distribution's package) serves them.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}
{%- set metrics_file = m.node_exporter.textfile_dir ~ '/' ~ m.barman_metrics_file %}
{%- set script = m.barman_metrics_script %}
{#- Validated paths and Barman server names (no quoting needed but the JSON's). #}
{#- With restore drills: their results' directory (barman_drill_* metrics). #}
{%- set drill_dir = ['--drill-dir', pg.barman.drill.dir] if pg.barman.drill else [] %}
{%- set write_metrics = ([script, '--barman', pg.barman.bin, '--config', pg.barman.config_file] + drill_dir
                         + [metrics_file, "'" ~ (m.barman_max_ages | json) ~ "'"]) | join(' ') %}

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

# The script and the metric code it loads (from beside it), root's, not writable by others.
pg_replication-monitoring-barman-metrics-script:
  file.managed:
    - names:
      - {{ script }}:
        - source: salt://{{ tplroot }}/monitoring/files/barman-metrics.py
        - mode: '0755'
      - {{ salt['file.join'](salt['file.dirname'](script), 'pg_replication_barman_metrics.py') }}:
        - source: salt://_utils/pg_replication_barman_metrics.py
        - mode: '0644'
    - user: root
    - group: root
    - makedirs: True

# As root: the script runs `barman -f json` as the barman user, and writes into the
# textfile directory.
pg_replication-monitoring-barman-cron:
  file.managed:
    - name: {{ m.cron_file }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (pg_replication): Barman's metrics for Prometheus.
        */{{ m.barman_interval }} * * * * root {{ write_metrics }}
    - require:
      # The package makes its textfile directory (the script makes another one).
      - pkg: pg_replication-monitoring-node-exporter-pkg
      - file: pg_replication-monitoring-barman-metrics-script
      - sls: {{ tplroot }}.barman
