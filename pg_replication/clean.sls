# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Undo what the highstate set up for this minion's role: stop the services and remove the
# configuration, cron and repository files the formula wrote. Never data: data
# directories, WAL, slots, Barman's backups and WAL archive, Prometheus' time series stay,
# and so do the packages (monitoring/clean.sls: the monitoring files).
# Apply with `salt MINION state.apply pg_replication.clean`.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

{%- if pg.role in ('primary', 'standby') %}
include:
  - {{ tplroot }}.server.clean
{%-   if pg.monitoring.enabled %}
  - {{ tplroot }}.monitoring.clean
{%-   endif %}
{%- elif pg.role == 'barman' %}
include:
  - {{ tplroot }}.barman.clean
{%-   if pg.monitoring.enabled %}
  - {{ tplroot }}.monitoring.clean
{%-   endif %}
{%- endif %}

{%- if grains['os_family'] == 'Debian' %}
pg_replication-upstream-repo-clean:
  file.absent:
    - names:
      - /etc/apt/sources.list.d/pgdg.list
      - {{ pg.repo.keyring }}
{%- elif grains['os_family'] == 'RedHat' %}
pg_replication-upstream-repo-clean:
  pkgrepo.absent:
    - name: pgdg{{ pg.version }}
{%- endif %}
