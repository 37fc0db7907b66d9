# Compile another C program without optimisation.
gcc -O0 -g -c /progs/src/sieve.c -o /tmp/s.o && ls -l /tmp/s.o
