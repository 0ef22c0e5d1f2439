# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# On the primary: the applications' roles, databases (extensions, schemas) and privileges
# from the pillar, then what pg_replication:absent lists dropped. Standbys get them by
# replication. A role or a database that leaves the pillar is left alone.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set conn = {'port': pg.port, 'host': pg.socket_dir} %}

include:
  - .service
  - .primary

{%- for name, role in pg.apps.roles | dictsort %}

pg_replication-app-role-{{ name }}:
  pg_replication.role_present:
    - name: {{ name }}
{%-   if role.has_password %}
    # Read on the minion: the password stays out of the state's arguments.
    - password_pillar: pg_replication:roles:{{ name }}:password
{%-   endif %}
{%-   for attr in ['login', 'superuser', 'createdb', 'createrole', 'inherit', 'replication', 'bypassrls'] %}
    - {{ attr }}: {{ role[attr] }}
{%-   endfor %}
    - connlimit: {{ role.connlimit }}
{%-   if role.valid_until is not none %}
    - valid_until: {{ role.valid_until | yaml_dquote }}
{%-   endif %}
    - groups: {{ role.member_of | json }}
    - port: {{ conn.port }}
    - host: {{ conn.host }}
    - require:
      - sls: {{ tplroot }}.server.service
      - sls: {{ tplroot }}.server.primary
{%-   for group in role.member_of if group in pg.apps.roles %}
      - pg_replication: pg_replication-app-role-{{ group }}
{%-   endfor %}
{%- endfor %}

{%- for name, db in pg.apps.databases | dictsort %}

pg_replication-app-database-{{ name }}:
  pg_replication.database_present:
    - name: {{ name }}
    - owner: {{ db.owner }}
{%-   for attr in ['encoding', 'lc_collate', 'lc_ctype', 'template'] if db[attr] is not none %}
    - {{ attr }}: {{ db[attr] | yaml_dquote }}
{%-   endfor %}
    - connlimit: {{ db.connlimit }}
    - extensions: {{ db.extensions | json }}
    - schemas: {{ db.schemas | json }}
    - port: {{ conn.port }}
    - host: {{ conn.host }}
    - require:
      - sls: {{ tplroot }}.server.service
{%-   for role in pg.apps.roles %}
      - pg_replication: pg_replication-app-role-{{ role }}
{%-   endfor %}
{%- endfor %}

{%- for grant in pg.apps.privileges %}

pg_replication-app-privileges-{{ loop.index0 }}:
  pg_replication.privileges_present:
    - name: {{ grant.key }}
    - role: {{ grant.role }}
    - database: {{ grant.database }}
    - 'on': {{ grant.on }}
    - privileges: {{ grant.privileges | json }}
{%-   for attr in ['schema', 'default_for'] if grant[attr] is not none %}
    - {{ attr }}: {{ grant[attr] }}
{%-   endfor %}
{%-   if grant.objects %}
    - objects: {{ grant.objects | json }}
{%-   endif %}
    - port: {{ conn.port }}
    - host: {{ conn.host }}
    - require:
      - sls: {{ tplroot }}.server.service
{%-   for role in pg.apps.roles %}
      - pg_replication: pg_replication-app-role-{{ role }}
{%-   endfor %}
{%-   for db in pg.apps.databases %}
      - pg_replication: pg_replication-app-database-{{ db }}
{%-   endfor %}
{%- endfor %}

{%- for name in pg.apps.absent.databases %}

pg_replication-app-database-absent-{{ name }}:
  pg_replication.database_absent:
    - name: {{ name }}
    - port: {{ conn.port }}
    - host: {{ conn.host }}
    - require:
      - sls: {{ tplroot }}.server.service
{%- endfor %}

{%- for name in pg.apps.absent.roles %}

pg_replication-app-role-absent-{{ name }}:
  pg_replication.app_role_absent:
    - name: {{ name }}
    - port: {{ conn.port }}
    - host: {{ conn.host }}
    - require:
      - sls: {{ tplroot }}.server.service
{%-   for db in pg.apps.databases %}
      - pg_replication: pg_replication-app-database-{{ db }}
{%-   endfor %}
{%-   for db in pg.apps.absent.databases %}
      - pg_replication: pg_replication-app-database-absent-{{ db }}
{%-   endfor %}
{%-   for i in range(pg.apps.privileges | length) %}
      - pg_replication: pg_replication-app-privileges-{{ i }}
{%-   endfor %}
{%- endfor %}
