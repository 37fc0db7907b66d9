# Compile another C program without optimisation.
/usr/bin/gcc -O0 -g -c /progs/src/sieve.c -o /tmp/s.o && ls -l /tmp/s.o
