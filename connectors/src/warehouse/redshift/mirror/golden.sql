-- schema_exists
SELECT CAST(schema_name AS VARCHAR(128)) FROM information_schema.schemata WHERE schema_name = :p1 -- params ["ferry_staging"];

-- create_schema
CREATE SCHEMA IF NOT EXISTS "ferry_staging";

-- list_tables
SELECT CAST(table_name AS VARCHAR(128)) FROM information_schema.tables WHERE table_schema = :p1 -- params ["ferry_staging"];

-- drop_table
DROP TABLE IF EXISTS "ferry_staging"."chg_0123456789ab_2";

-- snapshot keyed, every kind
CREATE TABLE "ferry_staging"."snap_0123456789ab_2" DISTKEY("_mp_key_hash") SORTKEY("_mp_key_hash") AS SELECT src.*, md5(rtrim(coalesce(CAST(src."id" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."Name ""x""" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CASE WHEN src."active" THEN 't' WHEN NOT src."active" THEN 'f' END || chr(30), '') || chr(31) || coalesce(CAST(CAST(src."score" AS FLOAT8) AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."price" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST((src."seen_at" AT TIME ZONE 'UTC') AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."local_at" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."born" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(JSON_SERIALIZE(src."props") || chr(30), '') || chr(31) || coalesce(CAST(src."tags" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."blob" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."uid" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."span" AS VARCHAR(65535)) || chr(30), ''), chr(31))) AS "_mp_row_hash", md5(rtrim(coalesce(CAST(src."id" AS VARCHAR(65535)) || chr(30), ''), chr(31))) AS "_mp_key_hash" FROM "public"."users" AS src;

-- snapshot keyless, from SQL
CREATE TABLE "ferry_staging"."snap_0123456789ab_2" DISTKEY("_mp_row_hash") SORTKEY("_mp_row_hash") AS SELECT src.*, md5(rtrim(coalesce(CAST(src."id" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CAST(src."Name ""x""" AS VARCHAR(65535)) || chr(30), '') || chr(31) || coalesce(CASE WHEN src."active" THEN 't' WHEN NOT src."active" THEN 'f' END || chr(30), ''), chr(31))) AS "_mp_row_hash" FROM (SELECT id, "Name ""x""", active FROM users) AS src;

-- diff first generation
CREATE TABLE "ferry_staging"."chg_0123456789ab_2" AS SELECT ROW_NUMBER() OVER (ORDER BY n."_mp_key_hash") AS "_mp_change_seq", CAST('insert' AS VARCHAR(6)) AS "_mp_change_type", n."_mp_key_hash" AS "_mp_key_hash", n."_mp_row_hash" AS "_mp_new_hash", CAST(NULL AS VARCHAR(32)) AS "_mp_old_hash", n."_mp_rows" AS "_mp_new_rows", CAST(0 AS BIGINT) AS "_mp_old_rows" FROM (SELECT s."_mp_key_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_2" s GROUP BY 1) n;

-- diff keyed, column added
CREATE TABLE "ferry_staging"."chg_0123456789ab_2" AS SELECT ROW_NUMBER() OVER (ORDER BY d."_mp_change_rank", d."_mp_key_hash") AS "_mp_change_seq", d."_mp_change_type", d."_mp_key_hash", d."_mp_new_hash", d."_mp_old_hash", d."_mp_new_rows", d."_mp_old_rows" FROM (SELECT CASE WHEN o."_mp_key_hash" IS NULL THEN 3 WHEN n."_mp_key_hash" IS NULL THEN 1 ELSE 2 END AS "_mp_change_rank", CAST(CASE WHEN o."_mp_key_hash" IS NULL THEN 'insert' WHEN n."_mp_key_hash" IS NULL THEN 'delete' ELSE 'update' END AS VARCHAR(6)) AS "_mp_change_type", COALESCE(n."_mp_key_hash", o."_mp_key_hash") AS "_mp_key_hash", n."_mp_row_hash" AS "_mp_new_hash", o."_mp_row_hash" AS "_mp_old_hash", COALESCE(n."_mp_rows", 0) AS "_mp_new_rows", COALESCE(o."_mp_rows", 0) AS "_mp_old_rows" FROM (SELECT s."_mp_key_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_2" s GROUP BY 1) n FULL OUTER JOIN (SELECT s."_mp_key_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_1" s GROUP BY 1) o ON n."_mp_key_hash" = o."_mp_key_hash" WHERE n."_mp_key_hash" IS NULL OR o."_mp_key_hash" IS NULL OR n."_mp_row_hash" <> o."_mp_row_hash") d;

-- diff keyless
CREATE TABLE "ferry_staging"."chg_0123456789ab_2" AS SELECT ROW_NUMBER() OVER (ORDER BY d."_mp_change_rank", d."_mp_key_hash") AS "_mp_change_seq", d."_mp_change_type", d."_mp_key_hash", d."_mp_new_hash", d."_mp_old_hash", d."_mp_new_rows", d."_mp_old_rows" FROM (SELECT CASE WHEN o."_mp_key_hash" IS NULL THEN 3 WHEN n."_mp_key_hash" IS NULL THEN 1 ELSE 2 END AS "_mp_change_rank", CAST(CASE WHEN o."_mp_key_hash" IS NULL THEN 'insert' WHEN n."_mp_key_hash" IS NULL THEN 'delete' ELSE 'update' END AS VARCHAR(6)) AS "_mp_change_type", COALESCE(n."_mp_key_hash", o."_mp_key_hash") AS "_mp_key_hash", n."_mp_row_hash" AS "_mp_new_hash", o."_mp_row_hash" AS "_mp_old_hash", COALESCE(n."_mp_rows", 0) AS "_mp_new_rows", COALESCE(o."_mp_rows", 0) AS "_mp_old_rows" FROM (SELECT s."_mp_row_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_2" s GROUP BY 1) n FULL OUTER JOIN (SELECT s."_mp_row_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_1" s GROUP BY 1) o ON n."_mp_key_hash" = o."_mp_key_hash" WHERE n."_mp_key_hash" IS NULL OR o."_mp_key_hash" IS NULL OR n."_mp_row_hash" <> o."_mp_row_hash") d;

-- diff keys changed from none to id
CREATE TABLE "ferry_staging"."chg_0123456789ab_2" AS SELECT ROW_NUMBER() OVER (ORDER BY d."_mp_change_rank", d."_mp_key_hash") AS "_mp_change_seq", d."_mp_change_type", d."_mp_key_hash", d."_mp_new_hash", d."_mp_old_hash", d."_mp_new_rows", d."_mp_old_rows" FROM (SELECT CASE WHEN o."_mp_key_hash" IS NULL THEN 3 WHEN n."_mp_key_hash" IS NULL THEN 1 ELSE 2 END AS "_mp_change_rank", CAST(CASE WHEN o."_mp_key_hash" IS NULL THEN 'insert' WHEN n."_mp_key_hash" IS NULL THEN 'delete' ELSE 'update' END AS VARCHAR(6)) AS "_mp_change_type", COALESCE(n."_mp_key_hash", o."_mp_key_hash") AS "_mp_key_hash", n."_mp_row_hash" AS "_mp_new_hash", o."_mp_row_hash" AS "_mp_old_hash", COALESCE(n."_mp_rows", 0) AS "_mp_new_rows", COALESCE(o."_mp_rows", 0) AS "_mp_old_rows" FROM (SELECT s."_mp_key_hash" AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_2" s GROUP BY 1) n FULL OUTER JOIN (SELECT md5(rtrim(coalesce(CAST(s."id" AS VARCHAR(65535)) || chr(30), ''), chr(31))) AS "_mp_key_hash", MIN(s."_mp_row_hash") AS "_mp_row_hash", COUNT(*) AS "_mp_rows" FROM "ferry_staging"."snap_0123456789ab_1" s GROUP BY 1) o ON n."_mp_key_hash" = o."_mp_key_hash" WHERE n."_mp_key_hash" IS NULL OR o."_mp_key_hash" IS NULL OR n."_mp_row_hash" <> o."_mp_row_hash") d;

-- change_counts
SELECT "_mp_change_type", COUNT(*) FROM "ferry_staging"."chg_0123456789ab_2" GROUP BY "_mp_change_type";

-- shared_identities
SELECT COUNT(*) FROM "ferry_staging"."chg_0123456789ab_2" WHERE "_mp_new_rows" > 1 OR "_mp_old_rows" > 1;

-- shared_identity_samples
SELECT DISTINCT CAST(n."id" AS VARCHAR(256)) FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_2" n ON n."_mp_key_hash" = c."_mp_key_hash" WHERE c."_mp_new_rows" > 1 LIMIT 5;

-- read_changes keyed, old narrower
SELECT n."id", n."Name ""x""", n."active", n."score", n."price", n."seen_at", n."local_at", n."born", n."props", n."tags", n."blob", n."uid", n."span", c."_mp_change_type", c."_mp_change_seq" FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_2" n ON n."_mp_key_hash" = c."_mp_key_hash" AND n."_mp_row_hash" = c."_mp_new_hash" WHERE c."_mp_change_type" <> 'delete' UNION ALL SELECT o."id", o."Name ""x""", o."active", NULL AS "score", NULL AS "price", NULL AS "seen_at", NULL AS "local_at", NULL AS "born", NULL AS "props", NULL AS "tags", NULL AS "blob", NULL AS "uid", NULL AS "span", c."_mp_change_type", c."_mp_change_seq" FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_1" o ON o."_mp_key_hash" = c."_mp_key_hash" AND o."_mp_row_hash" = c."_mp_old_hash" WHERE c."_mp_change_type" = 'delete';

-- read_changes keyless, deduplicated
SELECT x."id", x."Name ""x""", x."active", x."_mp_change_type", x."_mp_change_seq" FROM (SELECT n."id", n."Name ""x""", n."active", c."_mp_change_type", c."_mp_change_seq", ROW_NUMBER() OVER (PARTITION BY c."_mp_change_seq" ORDER BY c."_mp_change_seq") AS "_mp_change_dup" FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_2" n ON n."_mp_row_hash" = c."_mp_key_hash" AND n."_mp_row_hash" = c."_mp_new_hash" WHERE c."_mp_change_type" <> 'delete' UNION ALL SELECT o."id", o."Name ""x""", o."active", c."_mp_change_type", c."_mp_change_seq", ROW_NUMBER() OVER (PARTITION BY c."_mp_change_seq" ORDER BY c."_mp_change_seq") AS "_mp_change_dup" FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_1" o ON o."_mp_row_hash" = c."_mp_key_hash" AND o."_mp_row_hash" = c."_mp_old_hash" WHERE c."_mp_change_type" = 'delete') x WHERE x."_mp_change_dup" = 1;

-- read_changes first generation
SELECT n."id", n."Name ""x""", n."active", n."score", n."price", n."seen_at", n."local_at", n."born", n."props", n."tags", n."blob", n."uid", n."span", c."_mp_change_type", c."_mp_change_seq" FROM "ferry_staging"."chg_0123456789ab_2" c JOIN "ferry_staging"."snap_0123456789ab_2" n ON n."_mp_key_hash" = c."_mp_key_hash" AND n."_mp_row_hash" = c."_mp_new_hash" WHERE c."_mp_change_type" <> 'delete';

-- read_snapshot
SELECT s."id", s."Name ""x""", s."active" FROM "ferry_staging"."snap_0123456789ab_2" s;

