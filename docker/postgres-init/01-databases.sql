-- Databases and roles for the compose stack. The postgres image runs this once, when its data
-- volume is empty, as the superuser through psql (so psql meta-commands work here).
--
--   airflow     owns database airflow   (Airflow metadata + Celery result backend)
--   mlflow      owns database mlflow    (MLflow tracking + model registry)
--   recsys      owns database recsys    (the pipeline's writer: recommendation tables, versions)
--   recsys_app  read-only on recsys     (what applications use to read recommendations)
--
-- Passwords come from the container environment (compose passes them from .env); psql's \getenv
-- (PostgreSQL 15+) reads them, and :'var' quotes them as SQL literals. A missing one stops the
-- script: no role is ever created with an empty or default password.

\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv recsys_password RECSYS_DB_PASSWORD
\getenv recsys_app_password RECSYS_APP_PASSWORD

-- An unset variable becomes '' so that the check below reports it by name.
\if :{?airflow_password} \else \set airflow_password '' \endif
\if :{?mlflow_password} \else \set mlflow_password '' \endif
\if :{?recsys_password} \else \set recsys_password '' \endif
\if :{?recsys_app_password} \else \set recsys_app_password '' \endif

SELECT set_config('recsys_init.missing', coalesce(string_agg(name, ', '), ''), false)
FROM (VALUES ('AIRFLOW_DB_PASSWORD', :'airflow_password'),
             ('MLFLOW_DB_PASSWORD', :'mlflow_password'),
             ('RECSYS_DB_PASSWORD', :'recsys_password'),
             ('RECSYS_APP_PASSWORD', :'recsys_app_password')) AS v (name, value)
WHERE value = '';

DO $$
BEGIN
    IF current_setting('recsys_init.missing') <> '' THEN
        RAISE EXCEPTION 'not set or empty in the postgres container environment: %',
            current_setting('recsys_init.missing');
    END IF;
END
$$;

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE recsys LOGIN PASSWORD :'recsys_password';
CREATE ROLE recsys_app LOGIN PASSWORD :'recsys_app_password';

-- Each service owns its database. Since PostgreSQL 15 the public schema belongs to the database
-- owner (pg_database_owner), so the owner, and nobody else, can create tables in it.
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE recsys OWNER recsys;

-- No role reaches a database that is not its own.
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE recsys FROM PUBLIC;
GRANT CONNECT ON DATABASE recsys TO recsys_app;

-- The application role reads, never writes, even if someone grants it more by mistake.
ALTER ROLE recsys_app SET default_transaction_read_only = on;
