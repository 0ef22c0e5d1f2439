# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# On the primary, with a pooler: the role PgBouncer looks its clients' SCRAM verifiers up
# as (LOGIN only), and the SECURITY DEFINER function its auth_query calls (EXECUTE for that
# role only) in every database that takes connections.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - {{ tplroot }}.server.service

pg_replication-pooler-lookup-role:
  pg_replication.role_present:
    - name: {{ pg.pooler.auth_user }}
    - password_pillar: pg_replication:pooler:auth_password
    - login: True
    - groups: []
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - sls: {{ tplroot }}.server.service

pg_replication-pooler-lookup-function:
  pg_replication.pooler_lookup:
    - name: {{ pg.pooler.auth_user }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - pg_replication: pg_replication-pooler-lookup-role
