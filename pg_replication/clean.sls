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

{%- set includes = {'primary': ['server'], 'standby': ['server'], 'barman': ['barman']}.get(pg.role, []) %}
{#- PgBouncer: on a host of role pooler, or beside another role (pg_replication:pooler:hosts). #}
{%- set includes = includes + (['pooler'] if pg.routing.pooler else []) %}
{%- if pg.monitoring.enabled and pg.role in ('primary', 'standby', 'barman') %}
{%-   set includes = includes + ['monitoring'] %}
{%- endif %}
{%- if includes %}
include:
{%-   for sls in includes %}
  - {{ tplroot }}.{{ sls }}.clean
{%-   endfor %}
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
