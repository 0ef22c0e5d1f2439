# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A pooler's clean: PgBouncer stopped and disabled, the files the formula wrote removed (its
# listen and hba files, the TLS files, and the package's pgbouncer.ini and userlist.txt while
# they hold the formula's content: userlist.txt holds the lookup role's password). The
# package stays; the lookup role and function stay in the databases (data).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set files = pg.routing.files %}

pg_replication-pooler-service-clean:
  service.dead:
    - name: {{ pg.pooler.service }}
    - enable: False

pg_replication-pooler-config-clean:
  file.absent:
    - names:
{%- for name in ('listen', 'hba', 'auth', 'ca', 'cert', 'key') if files[name] is defined %}
      - {{ files[name] }}
{%- endfor %}
    - require:
      - service: pg_replication-pooler-service-clean

# The package's ini while it holds the formula's content (a second clean leaves the
# package's alone).
pg_replication-pooler-ini-clean:
  file.absent:
    - name: {{ files.ini }}
    - onlyif:
      - fun: file.contains
        path: {{ files.ini }}
        text: {{ 'Managed by Salt (pg_replication)' | json }}
    - require:
      - service: pg_replication-pooler-service-clean
