# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Applies what this minion's role (pg_replication:hosts:<minion id>:role) calls for.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

{%- set includes = {'primary': ['server'], 'standby': ['server'], 'barman': ['barman']}.get(pg.role, []) %}
{#- PgBouncer: on a host of role pooler, or beside another role (pg_replication:pooler:hosts). #}
{%- set includes = includes + (['pooler'] if pg.routing.pooler else []) %}
{%- set includes = includes + (['monitoring'] if pg.role in ('primary', 'standby', 'barman') and pg.monitoring.enabled else []) %}
{%- if includes %}
include:
{%-   for sls in includes %}
  - {{ tplroot }}.{{ sls }}
{%-   endfor %}
{%- else %}
pg_replication-no-role:
  test.nop:
    - name: minion {{ grains['id'] }} has no role in pg_replication:hosts
{%- endif %}
