# Compress the Python interpreter's binary (6.5 MiB) at level 2.
/usr/bin/xz -2 -T1 -c /usr/bin/python3.11 >/tmp/out.xz && ls -l /tmp/out.xz
