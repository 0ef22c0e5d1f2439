# -*- coding: utf-8 -*-
# vim: ft=sls
# postgresql.conf, pg_hba.conf, pg_ident.conf (and Debian's per-cluster files) from pillar.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .cluster

{%- set cluster_state = 'pg_replication: pg_replication-initdb' if pg.role == 'primary'
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

{%- if pg.tls %}
{#- TLS: the CA's certificate, this server's certificate and key, written from the pillar on
    the minion (contents_pillar: the key never is a state argument), before the settings that
    name them; a renewed certificate reloads the server. #}
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
      - {{ cluster_state }}
    - require_in:
      - file: pg_replication-config-postgresql.conf
{%-   endfor %}
{%- endif %}

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
