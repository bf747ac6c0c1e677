-- Row-level security is PostgreSQL's (see the PostgreSQL migration of this number). SQLite is
-- one process's embedded database: the store's tenant filter is the one line of defence there.
SELECT 1;
