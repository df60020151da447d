-- The control plane: projects (seed 000), build sessions (seed 004), agent runs (seed 001)
-- and the event log shared by seed 000's project_logs and seed 004's build_events.

create or replace function public.set_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- projects: one per idea (seed 000).
create table public.projects (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users (id) on delete cascade,
  title text not null check (length(title) between 1 and 200),
  description text check (length(description) <= 20000),
  category text check (length(category) <= 100),
  status text not null default 'spawning'
    check (status in ('spawning', 'running', 'completed', 'failed', 'canceled')),
  progress integer not null default 0 check (progress >= 0 and progress <= 100),
  github_url text,
  deployment_url text,
  preview_url text,
  error text,
  error_code text,
  idempotency_key text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index projects_user_created_idx on public.projects (user_id, created_at desc);
create index projects_status_idx on public.projects (status);
-- A repeated spawn with one key returns the first project (per owner; NULL owner = local).
create unique index projects_idempotency_key_idx
  on public.projects (coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
  where idempotency_key is not null;
create trigger projects_updated_at before update on public.projects
  for each row execute function public.set_updated_at();

-- build_sessions: one run of the pipeline for a project (seed 004).
create table public.build_sessions (
  id uuid primary key default gen_random_uuid(),
  project_id uuid references public.projects (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  status text not null default 'queued'
    check (status in ('queued', 'running', 'succeeded', 'failed', 'canceled')),
  template text,
  vibe_text text,
  options jsonb not null default '{}'::jsonb,
  plan jsonb,
  environment jsonb,
  outputs jsonb,
  error text,
  error_code text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index build_sessions_project_idx on public.build_sessions (project_id, created_at desc);
create index build_sessions_user_idx on public.build_sessions (user_id, created_at desc);
create trigger build_sessions_updated_at before update on public.build_sessions
  for each row execute function public.set_updated_at();

-- agent_runs: one per agent per build (seed 001), with its verification flow.
create table public.agent_runs (
  id uuid primary key default gen_random_uuid(),
  task_id uuid,
  project_id uuid references public.projects (id) on delete cascade,
  session_id uuid references public.build_sessions (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  agent_name text not null check (length(agent_name) between 1 and 100),
  agent_id text not null,
  status text not null default 'pending' check (status in (
    'pending', 'in_progress', 'awaiting_verification', 'verification_in_progress',
    'verification_passed', 'verification_failed', 'escalated_to_human',
    'completed', 'failed', 'canceled')),
  current_step text,
  progress_percent double precision not null default 0.0
    check (progress_percent >= 0 and progress_percent <= 100),
  result jsonb,
  error text,
  error_code text,
  metadata jsonb not null default '{}'::jsonb,
  verification_attempts integer not null default 0 check (verification_attempts >= 0),
  verification_evidence jsonb not null default '[]'::jsonb,
  heartbeat_at timestamptz,
  started_at timestamptz default now(),
  completed_at timestamptz,
  updated_at timestamptz not null default now()
);
create index agent_runs_user_started_idx on public.agent_runs (user_id, started_at desc);
create index agent_runs_project_idx on public.agent_runs (project_id);
create index agent_runs_session_idx on public.agent_runs (session_id);
create index agent_runs_active_idx on public.agent_runs (status)
  where status not in ('completed', 'failed', 'canceled');
create trigger agent_runs_updated_at before update on public.agent_runs
  for each row execute function public.set_updated_at();

-- project_logs: the event log (seed 000). Each event carries its writer and that writer's
-- sequence number: a reader resuming after (writer, seq) pairs gets every later event once.
-- `id` is derived by the writer from (writer_id, seq), so a retried batch is idempotent.
-- A direct single-row insert (seed 000's pattern) gets defaults: a writer of its own with
-- seq 1, which keeps the exactly-once cursor correct for it too.
create table public.project_logs (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  session_id uuid references public.build_sessions (id) on delete cascade,
  agent_name text not null,
  level text not null default 'info' check (level in ('info', 'success', 'warning', 'error')),
  type text not null default 'log',
  message text not null,
  data jsonb,
  "timestamp" timestamptz not null default now(),
  writer_id uuid not null default gen_random_uuid(),
  seq bigint not null default 1 check (seq > 0)
);
create unique index project_logs_cursor_idx on public.project_logs (project_id, writer_id, seq);

-- One NOTIFY per inserted batch (statement), naming the projects it touched, so live
-- readers wake once per flush rather than once per row. Any writer path (COPY, a bulk
-- INSERT through PostgREST) fires it.
create or replace function public.notify_project_logs() returns trigger
language plpgsql as $$
declare
  ids text;
begin
  select string_agg(distinct project_id::text, ',') into ids from new_rows;
  if ids is not null then
    if length(ids) > 7000 then
      ids := '*';
    end if;
    perform pg_notify('myyc_project_logs', ids);
  end if;
  return null;
end
$$;
create trigger project_logs_notify after insert on public.project_logs
  referencing new table as new_rows
  for each statement execute function public.notify_project_logs();

-- build_events (seed 004) is the same log, seen through seed 004's column names.
create view public.build_events with (security_invoker = true) as
  select id, session_id, "timestamp" as ts, type, message, data as payload,
         project_id, agent_name, level, writer_id, seq
  from public.project_logs
  where session_id is not null;

-- Row level security: a user reads only their own rows; the service role writes.
alter table public.projects enable row level security;
alter table public.build_sessions enable row level security;
alter table public.agent_runs enable row level security;
alter table public.project_logs enable row level security;

create policy projects_owner_select on public.projects for select to authenticated
  using (user_id = (select auth.uid()));
create policy build_sessions_owner_select on public.build_sessions for select to authenticated
  using (user_id = (select auth.uid()));
create policy agent_runs_owner_select on public.agent_runs for select to authenticated
  using (user_id = (select auth.uid()));
create policy project_logs_owner_select on public.project_logs for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = project_logs.project_id and p.user_id = (select auth.uid())));

-- Supabase no longer grants new public tables to the API roles: grant explicitly.
grant select on public.projects, public.build_sessions, public.agent_runs, public.project_logs,
  public.build_events to anon, authenticated;
grant all on public.projects, public.build_sessions, public.agent_runs, public.project_logs,
  public.build_events to service_role;

alter publication supabase_realtime add table public.projects, public.build_sessions,
  public.agent_runs, public.project_logs;

-- A project's status and progress, derived from its agent runs. Called after every run
-- change (by either store adapter; through PostgREST as /rpc/rollup_project). The project
-- row is locked first, so concurrent agents serialise and the last rollup sees every run.
--   any run failed                → failed
--   every run canceled            → canceled
--   every run completed/canceled  → completed (progress 100)
--   any run past pending          → running
-- A finished project keeps its status.
create or replace function public.rollup_project(p_project_id uuid)
returns setof public.projects
language plpgsql as $$
declare
  current_status text;
  statuses text[];
  mean_progress double precision;
  next_status text;
begin
  select status into current_status from public.projects where id = p_project_id for update;
  if not found then
    raise exception 'project % not found', p_project_id using errcode = 'P0002';
  end if;
  select array_agg(status), avg(progress_percent) into statuses, mean_progress
    from public.agent_runs where project_id = p_project_id;
  next_status := current_status;
  if current_status not in ('completed', 'failed', 'canceled') and statuses is not null then
    if 'failed' = any(statuses) then
      next_status := 'failed';
    elsif statuses <@ array['canceled'] then
      next_status := 'canceled';
    elsif statuses <@ array['completed', 'canceled'] then
      next_status := 'completed';
    elsif exists (select 1 from unnest(statuses) s where s <> 'pending') then
      next_status := 'running';
    end if;
    update public.projects
       set status = next_status,
           progress = case when next_status = 'completed' then 100
                           else least(100, greatest(0, floor(coalesce(mean_progress, 0))))::int end
     where id = p_project_id;
  end if;
  return query select * from public.projects where id = p_project_id;
end
$$;
-- Supabase grants execute on new public functions to anon and authenticated by default.
revoke all on function public.rollup_project(uuid) from public, anon, authenticated;
grant execute on function public.rollup_project(uuid) to service_role;
