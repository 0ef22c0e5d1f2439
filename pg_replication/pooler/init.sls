# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# PgBouncer in front of the primary (pg_replication:pooler): the distribution's package, its
# ini (the target the runners repoint), hba and auth file, TLS files; a changed listen file
# restarts it, any other change reloads it. The lookup role and function it logs in with
# are the primary's (pooler/lookup.sls).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set files = pg.routing.files %}

include:
  # The runners drive PgBouncer's admin console with psycopg2.
  - {{ tplroot }}.psycopg2

pg_replication-pooler-pkg:
  pkg.installed:
    - name: {{ pg.pooler.pkg }}

{%- for name, mode in (('listen', '0644'), ('ini', '0644'), ('hba', '0644'), ('auth', '0640')) %}

pg_replication-pooler-{{ name }}:
  file.managed:
    - name: {{ files[name] }}
    - source: salt://{{ tplroot }}/pooler/files/lines.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
        which: {{ name }}
    - user: root
    - group: postgres
    - mode: '{{ mode }}'
{%- if name == 'auth' %}
    # It holds the lookup role's password.
    - show_changes: False
{%- endif %}
    - require:
      - pkg: pg_replication-pooler-pkg
{%- endfor %}

{%- if files.ca is defined %}

pg_replication-pooler-ca:
  file.managed:
    - name: {{ files.ca }}
    - contents_pillar: pg_replication:tls:ca_cert
    - user: root
    - group: postgres
    - mode: '0644'
    - require:
      - pkg: pg_replication-pooler-pkg
{%- endif %}
{%- if files.cert is defined %}
{%- for name, mode in (('cert', '0644'), ('key', '0640')) %}

pg_replication-pooler-{{ name }}:
  file.managed:
    - name: {{ files[name] }}
    - contents_pillar: pg_replication:tls:hosts:{{ pg.minion_id }}:{{ name }}
    - user: root
    - group: postgres
    - mode: '{{ mode }}'
    - show_changes: False
    - require:
      - pkg: pg_replication-pooler-pkg
{%- endfor %}
{%- endif %}

pg_replication-pooler-service:
  service.running:
    - name: {{ pg.pooler.service }}
    - enable: True
    - reload: True
    - watch:
      - file: pg_replication-pooler-ini
      - file: pg_replication-pooler-hba
      - file: pg_replication-pooler-auth
{%- if files.ca is defined %}
      - file: pg_replication-pooler-ca
{%- endif %}
{%- if files.cert is defined %}
      - file: pg_replication-pooler-cert
      - file: pg_replication-pooler-key
{%- endif %}

# Where it listens is read at start only.
pg_replication-pooler-restart:
  module.run:
    - service.restart:
      - {{ pg.pooler.service }}
    - onchanges:
      - file: pg_replication-pooler-listen
    - require:
      - service: pg_replication-pooler-service
