# Another: an indexed join and range queries over two tables.
rm -f /tmp/db2.sqlite
/usr/bin/sqlite3 /tmp/db2.sqlite </progs/sqlite-2.sql
