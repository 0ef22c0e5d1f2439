# -*- coding: utf-8 -*-
# vim: ft=sls
# postgresql.conf, pg_hba.conf, pg_ident.conf (and Debian's per-cluster files) from pillar.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .cluster

{%- set cluster_state = 'cmd: pg_replication-initdb' if pg.role == 'primary'
                        else 'pg_replication: pg_replication-standby-bootstrap' %}
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
      - {{ cluster_state }}
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
      - {{ cluster_state }}
{%- endif %}
