# Every minion applies the formula; its role comes from pg_replication:hosts.
base:
  '*':
    - pg_replication
