# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# TLS, the server's side: the CA's certificate, this server's certificate and key in its
# conf_dir, written from the pillar on the minion (contents_pillar: the key never is a state
# argument), once the data directory is there and before the settings that name them
# (config.sls); a renewed certificate reloads the server (service.sls watches this file).
# The CA the server's own connections verify the others with: ../tls.sls.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .cluster

{%- if pg.tls %}
{%-   if pg.warnings %}

# What works now but will not for long (a certificate near its expiry): shown, changing nothing.
pg_replication-tls-warnings:
  test.configurable_test_state:
    - changes: False
    - result: True
    - comment: {{ pg.warnings | join('; ') | yaml_dquote }}
    - warnings: {{ pg.warnings | json }}
{%-   endif %}
{%-   set tls_files = {
        'ca_file': ('pg_replication:tls:ca_cert', '0644'),
        'cert_file': ('pg_replication:tls:hosts:' ~ pg.minion_id ~ ':cert', '0644'),
        'key_file': ('pg_replication:tls:hosts:' ~ pg.minion_id ~ ':key', '0600'),
      } %}
{%-   for name, spec in tls_files | dictsort %}

pg_replication-tls-{{ name }}:
  file.managed:
    - name: {{ pg.tls[name] }}
    - contents_pillar: {{ spec[0] }}
    - user: postgres
    - group: postgres
    - mode: '{{ spec[1] }}'
    - show_changes: False
    - require:
      - sls: {{ tplroot }}.server.cluster
{%-   endfor %}
{%- endif %}
