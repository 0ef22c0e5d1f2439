# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# postgres_exporter (the distribution's package) on a server: it connects over the local
# socket as the monitoring role (pg_monitor; peer authentication of its OS user, mapped in
# pg_ident.conf: no password anywhere) and runs the formula's queries (pg_replication_*).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}

include:
  - {{ tplroot }}.server.config
  - {{ tplroot }}.server.service

pg_replication-monitoring-postgres-exporter-pkg:
  pkg.installed:
    - name: {{ m.pkgs.postgres_exporter }}
{%- if grains['init'] == 'systemd' %}

# Debian's package starts the exporter before it has a data source: it fails until systemd's
# start limit stops it, and would refuse the start below. Once, after the install.
pg_replication-monitoring-postgres-exporter-reset-failed:
  cmd.run:
    - name: systemctl reset-failed {{ m.services.postgres_exporter }}.service || true
    - onchanges:
      - pkg: pg_replication-monitoring-postgres-exporter-pkg
    - require:
      - file: pg_replication-monitoring-postgres-exporter-queries
      - file: pg_replication-monitoring-postgres-exporter-defaults
    - require_in:
      - service: pg_replication-monitoring-postgres-exporter
{%- endif %}

{%- if pg.role == 'primary' %}

# The exporter's role (standbys get it by replication): LOGIN, pg_monitor, no password.
pg_replication-monitoring-role:
  pg_replication.role_present:
    - name: {{ m.user }}
    - login: True
    - replication: False
    - groups: [pg_monitor]
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service
    - require_in:
      - service: pg_replication-monitoring-postgres-exporter
{%- endif %}

{%- for name, file in (('queries', m.postgres_exporter.queries_file),
                       ('defaults', m.postgres_exporter.defaults_file)) %}

pg_replication-monitoring-postgres-exporter-{{ name }}:
  file.managed:
    - name: {{ file }}
    - source: salt://{{ tplroot }}/monitoring/files/postgres-exporter-{{ name }}.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: {{ m.os_user }}
    - mode: '0640'
    - context:
        tplroot: {{ tplroot }}
    - require:
      - pkg: pg_replication-monitoring-postgres-exporter-pkg
{%- endfor %}

# The package names its service after itself.
pg_replication-monitoring-postgres-exporter:
  service.running:
    - name: {{ m.services.postgres_exporter }}
    - enable: True
    - require:
      - sls: {{ tplroot }}.server.config
      - sls: {{ tplroot }}.server.service
    - watch:
      - file: pg_replication-monitoring-postgres-exporter-queries
      - file: pg_replication-monitoring-postgres-exporter-defaults
