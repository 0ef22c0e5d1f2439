# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# monitoring:tls: the exporters serve https (exporter-toolkit's web configuration file) with
# this host's certificate and key from tls:hosts, and Prometheus verifies them against
# tls:ca_cert. Written from the pillar on the minion (contents_pillar: the key never is a
# state argument), in monitoring:tls_dir, readable by the exporters' user only.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}
{%- set files = m.tls_files %}
{#- (state id suffix, exporter's service state id, package state id) of this host's exporters. #}
{%- set exporters = [] %}
{%- if m.server %}
{%-   do exporters.append(('postgres_exporter', 'pg_replication-monitoring-postgres-exporter',
                           'pg_replication-monitoring-postgres-exporter-pkg')) %}
{%- endif %}
{%- if m.backup %}
{%-   do exporters.append(('node_exporter', 'pg_replication-monitoring-node-exporter',
                           'pg_replication-monitoring-node-exporter-pkg')) %}
{%- endif %}

include:
{%- if m.server %}
  - .server
{%- endif %}
{%- if m.backup %}
  - .backup
{%- endif %}
{%- if m.prometheus.here %}
  - .prometheus
{%- endif %}

# The packages make the exporters' user (its group reads the key).
pg_replication-monitoring-tls-dir:
  file.directory:
    - name: {{ m.tls_dir }}
    - user: root
    - group: {{ m.os_user }}
    - mode: '0750'
    - makedirs: True
    - require:
{%- for _, _, pkg_id in exporters %}
      - pkg: {{ pkg_id }}
{%- endfor %}
{%- if m.prometheus.here %}
      - pkg: pg_replication-monitoring-prometheus-pkg
{%- endif %}
{%- if exporters %}

{%-   for name, pillar_key, mode in (('cert', 'cert', '0644'), ('key', 'key', '0640')) %}

pg_replication-monitoring-tls-{{ name }}:
  file.managed:
    - name: {{ files[name] }}
    - contents_pillar: pg_replication:tls:hosts:{{ pg.minion_id }}:{{ pillar_key }}
    - user: root
    - group: {{ m.os_user }}
    - mode: '{{ mode }}'
    - show_changes: False
    - require:
      - file: pg_replication-monitoring-tls-dir
    - watch_in:
{%-     for _, service_id, _ in exporters %}
      - service: {{ service_id }}
{%-     endfor %}
{%-   endfor %}
{%-   for name, service_id, _ in exporters %}

pg_replication-monitoring-tls-{{ name | replace('_', '-') }}-web:
  file.managed:
    - name: {{ files[name ~ '_web'] }}
    - source: salt://{{ tplroot }}/monitoring/files/web-config.yml.jinja
    - template: jinja
    - user: root
    - group: {{ m.os_user }}
    - mode: '0640'
    - context:
        files: {{ files | json }}
    - require:
      - file: pg_replication-monitoring-tls-cert
      - file: pg_replication-monitoring-tls-key
    - watch_in:
      - service: {{ service_id }}
{%-   endfor %}
{%- endif %}
{%- if m.prometheus.here %}

# The CA Prometheus verifies the exporters' certificates with.
pg_replication-monitoring-tls-ca:
  file.managed:
    - name: {{ files.ca }}
    - contents_pillar: pg_replication:tls:ca_cert
    - user: root
    - group: {{ m.os_user }}
    - mode: '0644'
    - show_changes: False
    - require:
      - file: pg_replication-monitoring-tls-dir
    - watch_in:
      - service: pg_replication-monitoring-prometheus
{%- endif %}
