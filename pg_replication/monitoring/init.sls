# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Prometheus metrics (pg_replication:monitoring): every server's postgres_exporter, a backup
# host's Barman metrics, and Prometheus itself on the host the pillar names.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}

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
{%- if m.tls_files %}
  - .tls
{%- endif %}
{%- if m.beacon.enabled and (m.server or m.backup) %}
  - .beacon
{%- endif %}
