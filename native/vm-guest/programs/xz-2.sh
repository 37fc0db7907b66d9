# Compress SQLite's library (1.4 MiB) and the dynamic loader at level 2.
cat /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 /lib64/ld-linux-x86-64.so.2 | /usr/bin/xz -2 -T1 -c >/tmp/out.xz && ls -l /tmp/out.xz
