-- The build pipeline: an owner lease per build (crash-proof resume), approvals for
-- escalated builds, the model usage ledger, admin settings, versioned project files, and the
-- LangGraph checkpoint schema.

-- A build is owned by one orchestrator at a time: it renews `lease_expires_at` while it
-- works; whoever finds the lease expired resumes the build from its last checkpoint.
alter table public.build_sessions
  add column lease_owner text,
  add column lease_expires_at timestamptz,
  add column resume_count integer not null default 0 check (resume_count >= 0),
  add column presence jsonb,
  add column finished_at timestamptz;
create index build_sessions_live_idx on public.build_sessions (lease_expires_at)
  where status in ('queued', 'running');

-- An escalated build waits for a person's decision (seed 001's escalated_to_human).
create table public.approvals (
  id uuid primary key default gen_random_uuid(),
  token text not null unique check (length(token) between 20 and 200),
  session_id uuid not null references public.build_sessions (id) on delete cascade,
  project_id uuid not null references public.projects (id) on delete cascade,
  run_id uuid references public.agent_runs (id) on delete set null,
  user_id uuid references auth.users (id) on delete cascade,
  attempt integer not null check (attempt >= 1),
  status text not null default 'pending'
    check (status in ('pending', 'approve', 'reject', 'retry', 'expired')),
  reason text not null,
  evidence jsonb not null default '{}'::jsonb,
  note text check (length(note) <= 5000),
  expires_at timestamptz not null,
  decided_at timestamptz,
  created_at timestamptz not null default now(),
  unique (session_id, attempt)
);
create index approvals_pending_idx on public.approvals (expires_at) where status = 'pending';
create index approvals_project_idx on public.approvals (project_id, created_at desc);

-- Every model call's tokens and cost, per run; summed per project through the API.
create table public.model_usage (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  session_id uuid references public.build_sessions (id) on delete cascade,
  run_id uuid references public.agent_runs (id) on delete set null,
  agent_name text not null,
  provider text not null,
  model text not null,
  prompt_name text,
  prompt_version integer,
  input_tokens bigint not null default 0 check (input_tokens >= 0),
  output_tokens bigint not null default 0 check (output_tokens >= 0),
  cost_usd numeric(14, 6),
  attempts integer not null default 1 check (attempts >= 1),
  created_at timestamptz not null default now()
);
create index model_usage_project_idx on public.model_usage (project_id, created_at);

-- Runtime settings an admin changes without a redeploy (seed 002), e.g. the model.
create table public.admin_settings (
  id uuid primary key default gen_random_uuid(),
  key text not null unique check (length(key) between 1 and 100),
  value jsonb not null,
  updated_at timestamptz not null default now()
);
create trigger admin_settings_updated_at before update on public.admin_settings
  for each row execute function public.set_updated_at();

-- A file's version moves only when its content changes: writing the same content again
-- (a resumed build regenerating a file) keeps its version and its updated_at. The row is
-- still returned (RETURNING sees it), so writers need not tell the two cases apart.
alter table public.project_files add column version integer not null default 1;
create or replace function public.project_files_version() returns trigger
language plpgsql as $$
begin
  if new.content is not distinct from old.content then
    new.version := old.version;
    new.updated_at := old.updated_at;
  else
    new.version := old.version + 1;
  end if;
  return new;
end
$$;
create trigger project_files_version before update on public.project_files
  for each row execute function public.project_files_version();

alter table public.approvals enable row level security;
alter table public.model_usage enable row level security;
alter table public.admin_settings enable row level security;

create policy approvals_owner_select on public.approvals for select to authenticated
  using (user_id = (select auth.uid()));
create policy model_usage_owner_select on public.model_usage for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = model_usage.project_id and p.user_id = (select auth.uid())));
-- admin_settings: no user policy; only the service role reads or writes it.

grant select on public.approvals, public.model_usage to anon, authenticated;
grant all on public.approvals, public.model_usage, public.admin_settings to service_role;
alter publication supabase_realtime add table public.approvals;

-- What the first request with an Idempotency-Key asked for (a hash of its body): the same
-- key with another body is a mistake the API refuses (idempotency_mismatch), not a repeat.
alter table public.projects add column idempotency_fingerprint text;

-- Spawn with seed 004's template and options, and the request's fingerprint (the old
-- spawn_project signature stays, for old callers). A repeated key whose fingerprint differs
-- from the first request's answers `mismatch: true` and creates nothing.
create or replace function public.spawn_build(
  p_title text,
  p_description text,
  p_category text,
  p_user_id uuid,
  p_idempotency_key text,
  p_agents text[],
  p_template text,
  p_vibe_text text,
  p_options jsonb,
  p_fingerprint text default null
) returns jsonb
language plpgsql as $$
declare
  v_result jsonb;
begin
  v_result := public.spawn_project(p_title, p_description, p_category, p_user_id,
                                   p_idempotency_key, p_agents);
  if (v_result ->> 'created')::boolean then
    update public.build_sessions
       set template = coalesce(p_template, template),
           vibe_text = coalesce(p_vibe_text, vibe_text),
           options = options || coalesce(p_options, '{}'::jsonb)
     where id = (v_result ->> 'build_id')::uuid;
    update public.projects set idempotency_fingerprint = p_fingerprint
     where id = (v_result ->> 'project_id')::uuid;
  elsif p_fingerprint is not null and exists (
      select 1 from public.projects
       where id = (v_result ->> 'project_id')::uuid
         and idempotency_fingerprint is not null
         and idempotency_fingerprint <> p_fingerprint) then
    v_result := v_result || '{"mismatch": true}'::jsonb;
  end if;
  return v_result;
end
$$;

-- Take (or keep) a build's lease. Nothing is returned when the build is over or another
-- owner's lease is still live — unless that owner is `p_dead_owner`, a process the caller
-- saw die (same host, pid gone), whose lease need not be waited out. Taking over another
-- owner's lease counts as a resume.
create or replace function public.claim_build(p_session_id uuid, p_owner text,
                                              p_ttl_seconds double precision,
                                              p_dead_owner text default null)
returns setof public.build_sessions
language plpgsql as $$
declare
  v public.build_sessions;
begin
  select * into v from public.build_sessions where id = p_session_id for update;
  if not found or v.status not in ('queued', 'running') then
    return;
  end if;
  if v.lease_owner is not null and v.lease_owner <> p_owner and v.lease_expires_at > now()
     and v.lease_owner is distinct from p_dead_owner then
    return;
  end if;
  return query
    update public.build_sessions
       set lease_owner = p_owner,
           lease_expires_at = now() + make_interval(secs => p_ttl_seconds),
           resume_count = resume_count
             + case when v.lease_owner is not null and v.lease_owner <> p_owner then 1 else 0 end,
           status = 'running'
     where id = p_session_id
    returning *;
end
$$;

-- Renew the lease while the owner still holds it; the row tells the owner if the build was
-- canceled meanwhile. Nothing returned: the lease is lost.
create or replace function public.renew_build_lease(p_session_id uuid, p_owner text,
                                                    p_ttl_seconds double precision)
returns setof public.build_sessions
language sql as $$
  update public.build_sessions
     set lease_expires_at = now() + make_interval(secs => p_ttl_seconds)
   where id = p_session_id and lease_owner = p_owner
  returning *;
$$;

create or replace function public.release_build_lease(p_session_id uuid, p_owner text)
returns void
language sql as $$
  update public.build_sessions set lease_owner = null, lease_expires_at = null
   where id = p_session_id and lease_owner = p_owner;
$$;

-- Builds nobody owns: live, with an expired lease (or never claimed for `p_grace_seconds`),
-- or owned by one of `p_dead_owners`; and not waiting on a person's decision.
create or replace function public.reclaimable_builds(p_grace_seconds double precision,
                                                     p_limit integer,
                                                     p_dead_owners text[] default '{}')
returns setof public.build_sessions
language sql stable as $$
  select s.* from public.build_sessions s
   where s.status in ('queued', 'running')
     and (coalesce(s.lease_expires_at, s.updated_at + make_interval(secs => p_grace_seconds))
          < now()
          or s.lease_owner = any(p_dead_owners))
     and not exists (select 1 from public.approvals a
                      where a.session_id = s.id and a.status = 'pending')
   order by s.created_at
   limit p_limit;
$$;

-- Who holds live leases now (a recovering process checks which of them are dead).
create or replace function public.build_lease_owners()
returns setof text
language sql stable as $$
  select distinct lease_owner from public.build_sessions
   where status in ('queued', 'running') and lease_owner is not null
     and lease_expires_at > now();
$$;

-- Live runs that stopped sending heartbeats while their build's owner is alive (a hung
-- agent): the watchdog fails them. Runs of an ownerless build are resumed, not failed.
create or replace function public.stalled_runs(p_deadline_seconds double precision,
                                               p_limit integer)
returns setof public.agent_runs
language sql stable as $$
  select r.* from public.agent_runs r
    left join public.build_sessions s on s.id = r.session_id
   where r.status in ('in_progress', 'awaiting_verification', 'verification_in_progress',
                      'verification_passed', 'verification_failed')
     and coalesce(r.heartbeat_at, r.started_at) < now() - make_interval(secs => p_deadline_seconds)
     and (s.id is null or (s.status in ('queued', 'running') and s.lease_expires_at > now()))
   order by r.heartbeat_at
   limit p_limit;
$$;

-- Record a person's decision once: a pending approval only.
create or replace function public.decide_approval(p_token text, p_decision text, p_note text)
returns setof public.approvals
language sql as $$
  update public.approvals
     set status = p_decision, note = p_note, decided_at = now()
   where token = p_token and status = 'pending'
  returning *;
$$;

-- Pending approvals past their deadline become `expired` (returned, to resume their builds).
create or replace function public.expire_approvals(p_limit integer)
returns setof public.approvals
language sql as $$
  update public.approvals set status = 'expired', decided_at = now()
   where token in (select token from public.approvals
                    where status = 'pending' and expires_at < now()
                    order by expires_at limit p_limit
                    for update skip locked)
  returning *;
$$;

do $$
declare
  fn text;
begin
  foreach fn in array array[
    'spawn_build(text, text, text, uuid, text, text[], text, text, jsonb, text)',
    'claim_build(uuid, text, double precision, text)',
    'renew_build_lease(uuid, text, double precision)',
    'release_build_lease(uuid, text)',
    'reclaimable_builds(double precision, integer, text[])',
    'build_lease_owners()',
    'stalled_runs(double precision, integer)',
    'decide_approval(text, text, text)',
    'expire_approvals(integer)'
  ] loop
    execute format('revoke all on function public.%s from public, anon, authenticated', fn);
    execute format('grant execute on function public.%s to service_role', fn);
  end loop;
end
$$;

-- LangGraph's checkpoints live in their own schema, out of PostgREST's reach: only the
-- service role (and the orchestrator's direct connection) may touch them.
create schema if not exists langgraph;
revoke all on schema langgraph from public;
grant usage, create on schema langgraph to service_role;

-- A project's status follows its runs, but it ends with its build: while a build session of
-- the project is still live (a failed agent's build is being closed, a verification is being
-- retried), the project stays `running`. The orchestrator closes the build first, so a
-- follower who stops at the project's final status finds the build's outcome in place.
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
    if next_status in ('completed', 'failed', 'canceled') and exists (
         select 1 from public.build_sessions b
          where b.project_id = p_project_id and b.status in ('queued', 'running')) then
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
