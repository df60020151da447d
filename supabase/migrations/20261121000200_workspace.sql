-- The LETSCODE workspace (seed 002): the activity log every actor appends to, the project
-- plan, the system prompts admins rotate, and deployments.

create table public.activity_log (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  actor text not null check (actor in ('ai', 'user', 'system')),
  action text not null check (length(action) between 1 and 200),
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
create index activity_log_project_idx on public.activity_log (project_id, created_at);

create table public.project_plan (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  feature text not null check (length(feature) between 1 and 500),
  status text not null default 'planned'
    check (status in ('planned', 'in_progress', 'done', 'dropped')),
  notes text,
  priority text not null default 'medium' check (priority in ('high', 'medium', 'low')),
  position integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (project_id, feature)
);
create index project_plan_project_idx on public.project_plan (project_id, position);
create trigger project_plan_updated_at before update on public.project_plan
  for each row execute function public.set_updated_at();

-- System prompts live in the database so admins change instructions without a redeploy;
-- at most one active version per name.
create table public.prompts (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  version integer not null default 1 check (version >= 1),
  role text not null default 'system' check (role in ('system', 'user', 'developer')),
  content text not null,
  is_active boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (name, version)
);
create unique index prompts_one_active_idx on public.prompts (name) where is_active;
create trigger prompts_updated_at before update on public.prompts
  for each row execute function public.set_updated_at();

create table public.deployments (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  provider text not null default 'modal',
  status text not null default 'queued'
    check (status in ('queued', 'building', 'ready', 'error', 'canceled')),
  url text,
  external_id text,
  error text,
  error_code text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index deployments_project_idx on public.deployments (project_id, created_at desc);
create trigger deployments_updated_at before update on public.deployments
  for each row execute function public.set_updated_at();

alter table public.activity_log enable row level security;
alter table public.project_plan enable row level security;
alter table public.prompts enable row level security;
alter table public.deployments enable row level security;

create policy activity_log_owner_select on public.activity_log for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = activity_log.project_id and p.user_id = (select auth.uid())));
create policy project_plan_owner_select on public.project_plan for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = project_plan.project_id and p.user_id = (select auth.uid())));
create policy deployments_owner_select on public.deployments for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = deployments.project_id and p.user_id = (select auth.uid())));
-- prompts: no user policy; only the service role (which bypasses RLS) reads or writes them.

grant select on public.activity_log, public.project_plan, public.deployments
  to anon, authenticated;
grant all on public.activity_log, public.project_plan, public.prompts, public.deployments
  to service_role;

alter publication supabase_realtime add table public.activity_log, public.project_plan,
  public.deployments;
