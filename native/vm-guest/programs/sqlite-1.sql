CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, page INTEGER, cost REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO events(kind, page, cost) SELECT CASE i % 3 WHEN 0 THEN 'fault' WHEN 1 THEN 'prefetch' ELSE 'background' END, (i * 7919) % 65536, (i % 97) / 7.0 FROM n;
SELECT kind, count(*), round(avg(cost), 3), max(page) FROM events GROUP BY kind ORDER BY kind;
SELECT page / 4096 AS bucket, count(*) FROM events GROUP BY bucket ORDER BY 2 DESC LIMIT 3;
