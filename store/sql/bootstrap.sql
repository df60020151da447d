-- Supabase compatibility on plain PostgreSQL.
--
-- Applied only where the database is not Supabase (no `supabase_admin` role), before the
-- migrations, so that supabase/migrations/*.sql run unchanged here and on Supabase.
-- Every statement is idempotent: running this twice changes nothing.

-- Roles are cluster-wide: two databases bootstrapping at once race on them, so a role that
-- appeared meanwhile is fine (the advisory lock in the runner only covers one database).
do $$
begin
  begin create role anon nologin noinherit;
  exception when duplicate_object or unique_violation then null; end;
  begin create role authenticated nologin noinherit;
  exception when duplicate_object or unique_violation then null; end;
  begin create role service_role nologin noinherit bypassrls;
  exception when duplicate_object or unique_violation then null; end;
  -- PostgREST logs in as `authenticator` and switches to the role named by the JWT.
  begin create role authenticator login noinherit;
  exception when duplicate_object or unique_violation then null; end;
end
$$;

grant anon, authenticated, service_role to authenticator;
grant usage on schema public to anon, authenticated, service_role;

create schema if not exists auth;
create schema if not exists extensions;
grant usage on schema auth, extensions to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
grant select on auth.users to service_role;

-- The definitions Supabase ships (supabase/auth migrations): the whole claims object in
-- `request.jwt.claims`, with the older per-claim settings read first as a fallback.
create or replace function auth.uid() returns uuid
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;
