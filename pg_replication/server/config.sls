# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# postgresql.conf, pg_hba.conf, pg_ident.conf (and Debian's per-cluster files) from pillar.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .cluster
  - .tls
{%- set files = {
      'postgresql.conf': 'postgresql.conf.jinja',
      'pg_hba.conf': 'pg_hba.conf.jinja',
      'pg_ident.conf': 'pg_ident.conf.jinja',
    } %}
{%- if grains['os_family'] == 'Debian' %}
{%-   do files.update({'start.conf': 'start.conf.jinja', 'pg_ctl.conf': 'pg_ctl.conf.jinja',
                       'environment': 'environment.jinja'}) %}
{%- endif %}

{%- for filename, template in files | dictsort %}

pg_replication-config-{{ filename }}:
  file.managed:
    - name: {{ pg.conf_dir }}/{{ filename }}
    - source: salt://{{ tplroot }}/server/files/{{ template }}
    - template: jinja
    - user: postgres
    - group: postgres
    - mode: '0640'
    - context:
        tplroot: {{ tplroot }}
    - require:
      # The data directory: initialised, or the standby's copy made.
      - sls: {{ tplroot }}.server.cluster
{%-   if pg.tls and filename == 'postgresql.conf' %}
      # The TLS files its settings name.
      - sls: {{ tplroot }}.server.tls
{%-   endif %}
{%- endfor %}

{%- if pg.role == 'standby' and not pg.standby_signal %}

pg_replication-config-recovery.conf:
  file.managed:
    - name: {{ pg.data_dir }}/recovery.conf
    - source: salt://{{ tplroot }}/server/files/recovery.conf.jinja
    - template: jinja
    - user: postgres
    - group: postgres
    - mode: '0600'
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.server.cluster
{%- endif %}
