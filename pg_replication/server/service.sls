# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# The server runs; configuration changes reload it, and restart it only when a changed
# setting needs a restart (pg_settings.pending_restart) and pg_replication:restart:<role>
# is auto (manual: the pending restart is reported; the rolling_restart runner makes it).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - {{ tplroot }}.psycopg2
  - .config
  - .tls

pg_replication-service:
  service.running:
    - name: {{ pg.service_name }}
    - enable: {{ pg.service.enable }}
    - reload: True
    - watch:
      - sls: {{ tplroot }}.server.config
{%- if pg.tls %}
      # A renewed certificate reloads the server.
      - sls: {{ tplroot }}.server.tls
{%- endif %}

pg_replication-restart-if-pending:
  pg_replication.restarted_if_pending:
    - name: {{ pg.service_name }}
    - mode: {{ pg.restart[pg.role] }}
    - role: {{ pg.role }}
    - settings: {{ pg.conf_settings | json }}
    - data_dir: {{ pg.data_dir }}
    - bin_dir: {{ pg.bin_dir }}
    - port: {{ pg.port }}
    - host: {{ pg.socket_dir }}
    - require:
      - service: pg_replication-service
      - sls: {{ tplroot }}.psycopg2
