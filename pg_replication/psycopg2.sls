# -*- coding: utf-8 -*-
# vim: ft=sls
# psycopg2 in the Python that runs Salt, for the pg_replication and barman modules: the
# distribution's package for a system Python, pip for Salt's onedir or a virtualenv.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set python = grains['pythonexecutable'] %}

pg_replication-salt-psycopg2:
{%- if python.startswith('/usr/bin/') %}
  pkg.installed:
    - name: {{ pg.salt_psycopg2_pkg }}
{%- else %}
  pip.installed:
    - name: psycopg2-binary
    - bin_env: {{ python }}
{%- endif %}
    # Asking Python is one fast import; pip (or apt) takes about 2 s on every re-apply.
    - unless: {{ python }} -c 'import psycopg2'
    - reload_modules: True
