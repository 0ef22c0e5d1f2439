# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# TLS, the client's side: the CA this host's own connections verify the PostgreSQL servers
# with (conninfo: sslmode=verify-full). A server's own certificate, key and CA are in
# server/tls.sls. server/clean.sls removes a server's files of both; barman/clean.sls leaves the
# backup host's CA (as before).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

{%- if pg.peer_tls %}
# A server's connections to the others (the role check, the bootstrap, slots, rejoin): a copy
# outside the data and configuration directories, first, as nothing else is there before the
# bootstrap.
pg_replication-peer-ca:
  file.managed:
    - name: {{ pg.peer_tls.sslrootcert }}
    - contents_pillar: pg_replication:tls:ca_cert
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - show_changes: False
    - order: 1
{%- elif pg.role == 'barman' and pg.tls %}
include:
  - {{ tplroot }}.barman.dirs

# A backup host's: the CA that signs the servers' certificates, in Barman's configuration
# directory (its server files' conninfo names it).
pg_replication-barman-tls-ca:
  file.managed:
    - name: {{ pg.tls.ca_file }}
    - contents_pillar: pg_replication:tls:ca_cert
    - user: root
    - group: barman
    - mode: '0644'
    - require:
      - sls: {{ tplroot }}.barman.dirs
{%- endif %}
