base:
  '*':
    - pg_replication
