# Compile a C program (the test guest's workload) with optimisation.
/usr/bin/gcc -O2 -c /progs/src/workload.c -o /tmp/w.o && ls -l /tmp/w.o
