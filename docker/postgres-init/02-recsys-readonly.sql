-- Read-only access for recsys_app: the live recommendations view and nothing else. The view does not
-- exist on a fresh volume; the publish step (recsys.privacy.access.ensure_app_role) grants SELECT on it
-- after it creates it, and revokes anything broader on every publish. Runs after 01-databases.sql.

\set ON_ERROR_STOP on
\connect recsys

GRANT USAGE ON SCHEMA public TO recsys_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM recsys_app;
