# A database workload: build a 20000-row table in a file database, aggregate it.
rm -f /tmp/db1.sqlite
/usr/bin/sqlite3 /tmp/db1.sqlite </progs/sqlite-1.sql
