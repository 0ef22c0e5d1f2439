# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# The PostgreSQL project's package repository, when pg_replication:upstream_repo is true.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

{%- if pg.upstream_repo %}
{%-   if grains['os_family'] == 'Debian' %}
pg_replication-upstream-repo:
  pkgrepo.managed:
    - name: deb [signed-by={{ pg.repo.keyring }}] {{ pg.repo.url }} {{ grains['oscodename'] }}-pgdg main
    - file: /etc/apt/sources.list.d/pgdg.list
    - key_url: {{ pg.repo.key_url }}
    - signedby: {{ pg.repo.keyring }}
    - aptkey: False
{%-   elif grains['os_family'] == 'RedHat' %}
# EL 8+: the distribution's postgresql module would hide the upstream packages.
pg_replication-disable-postgresql-module:
  cmd.run:
    - name: dnf -qy module disable postgresql
    - onlyif: dnf -q module list postgresql
    - unless: dnf -q module list --disabled postgresql

pg_replication-upstream-repo:
  pkgrepo.managed:
    - name: pgdg{{ pg.version }}
    - humanname: PostgreSQL {{ pg.version }} (upstream)
    - baseurl: {{ pg.repo.url }}
    - gpgcheck: 1
    - gpgkey: {{ pg.repo.key_url }}
    - require:
      - cmd: pg_replication-disable-postgresql-module
{%-   endif %}
{%- else %}
pg_replication-upstream-repo:
  test.nop:
    - name: the distribution's PostgreSQL packages (pg_replication:upstream_repo is false)
{%- endif %}
