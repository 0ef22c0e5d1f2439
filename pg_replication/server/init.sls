# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A PostgreSQL server: the primary, or a streaming standby of it.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .guard
  - .package
  - .cluster
  - .tls
  - .config
  - .service
  - .slots
  - .watchdog
{%- if pg.role == 'primary' %}
  - .primary
  - .apps
{%- endif %}
{%- if pg.ssh %}
  - .ssh
{%- endif %}
{%- if pg.routing.vip %}
  - .vip
{%- endif %}
{%- if pg.role == 'primary' and pg.routing.poolers %}
  - {{ tplroot }}.pooler.lookup
{%- endif %}
