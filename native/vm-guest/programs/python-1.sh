# Interpreter start and imports: json, re, collections, then a little work with them.
/usr/bin/python3 -c 'import json, re, collections; c = collections.Counter(re.findall(r"\w+", json.dumps({"k%d" % i: list(range(i % 7)) for i in range(2000)}))); print(len(c), c.most_common(2))'
