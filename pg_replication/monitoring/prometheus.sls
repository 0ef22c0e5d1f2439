# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Prometheus (the distribution's package) on monitoring:prometheus:host: it scrapes every
# exporter of the cluster and evaluates the formula's alert rules (files/alerts.yml.jinja,
# thresholds from monitoring:alerts).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}

pg_replication-monitoring-prometheus-pkg:
  pkg.installed:
    - name: {{ m.pkgs.prometheus }}

{%- for name, file in (('config', m.prometheus.config_file), ('alerts', m.prometheus.rules_file)) %}

pg_replication-monitoring-prometheus-{{ name }}:
  file.managed:
    - name: {{ file }}
    - source: salt://{{ tplroot }}/monitoring/files/{{ 'prometheus.yml' if name == 'config' else 'alerts.yml' }}.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: {{ m.os_user }}
    - mode: '0640'
    - context:
        tplroot: {{ tplroot }}
        monitoring: {{ m | json }}
    - require:
      - pkg: pg_replication-monitoring-prometheus-pkg
{%- endfor %}

pg_replication-monitoring-prometheus:
  service.running:
    - name: {{ m.services.prometheus }}
    - enable: True
    - watch:
      - file: pg_replication-monitoring-prometheus-config
      - file: pg_replication-monitoring-prometheus-alerts
