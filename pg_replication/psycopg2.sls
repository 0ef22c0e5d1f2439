# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# psycopg2 in the Python that runs Salt, for the pg_replication and barman modules: the
# distribution's package for a system Python, pip for Salt's onedir or a virtualenv.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set python = grains['pythonexecutable'] %}

pg_replication-salt-psycopg2:
{#- Asked at render, in Salt's own Python: an unless on pip/pkg costs about 1 s of every
    re-apply (pip.list or apt, or the loader's search for pip.mod_run_check). #}
{%- if salt['pg_replication.driver_installed'](python) %}
  test.nop:
    - name: psycopg2 imports in {{ python }}
{%- elif python.startswith('/usr/bin/') %}
  pkg.installed:
    - name: {{ pg.salt_psycopg2_pkg }}
    - reload_modules: True
{%- else %}
  pip.installed:
    - name: psycopg2-binary
    - bin_env: {{ python }}
    - reload_modules: True
{%- endif %}
