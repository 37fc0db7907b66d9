CREATE TABLE pages(page INTEGER PRIMARY KEY, kind INTEGER, bytes INTEGER);
CREATE TABLE faults(t INTEGER, page INTEGER, thread INTEGER);
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 8191)
INSERT INTO pages SELECT i, i % 3, (i * 2654435761) % 4096 FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 15000)
INSERT INTO faults SELECT i * 13, (i * 40503) % 8192, i % 4 FROM n;
CREATE INDEX faults_page ON faults(page);
SELECT p.kind, count(*), sum(p.bytes) FROM faults f JOIN pages p ON p.page = f.page GROUP BY p.kind;
SELECT count(*) FROM faults WHERE page BETWEEN 1000 AND 2000 AND thread = 2;
