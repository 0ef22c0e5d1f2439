# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Applies what this minion's role (pg_replication:hosts:<minion id>:role) calls for.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

{%- if pg.role in ('primary', 'standby', 'barman') %}
include:
{%-   if pg.role == 'barman' %}
  - {{ tplroot }}.barman
{%-   else %}
  - {{ tplroot }}.server
{%-   endif %}
{%-   if pg.monitoring.enabled %}
  - {{ tplroot }}.monitoring
{%-   endif %}
{%- else %}
pg_replication-no-role:
  test.nop:
    - name: minion {{ grains['id'] }} has no role in pg_replication:hosts
{%- endif %}
