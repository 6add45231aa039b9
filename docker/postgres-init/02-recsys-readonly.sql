-- Read-only access for recsys_app to what the pipeline's writer (recsys) creates in the recsys
-- database: the recommendations tables and the live-version view. Runs after 01-databases.sql.

\set ON_ERROR_STOP on
\connect recsys

GRANT USAGE ON SCHEMA public TO recsys_app;

-- Tables and views that exist now (none on a fresh volume) ...
GRANT SELECT ON ALL TABLES IN SCHEMA public TO recsys_app;

-- ... and every one the writer creates later, including each new published version.
ALTER DEFAULT PRIVILEGES FOR ROLE recsys IN SCHEMA public GRANT SELECT ON TABLES TO recsys_app;
