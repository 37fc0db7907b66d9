# A burst of 3000 requests (seed 2: other keys and ranges) to the idle service.
echo "burst 2 3000" >/tmp/svc.in
cat /tmp/svc.out
