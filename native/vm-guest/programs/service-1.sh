# A burst of 3000 requests (seed 1) to the idle service.
echo "burst 1 3000" >/tmp/svc.in
cat /tmp/svc.out
