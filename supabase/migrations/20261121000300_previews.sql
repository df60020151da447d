-- preview_sessions in seed 003's final, container-based shape.

create table public.preview_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users (id) on delete cascade,
  project_id uuid not null references public.projects (id) on delete cascade,
  session_id text,
  container_id text,
  container_url text,
  status text not null default 'creating'
    check (status in ('creating', 'active', 'ended', 'error')),
  error_message text,
  error_code text,
  expires_at timestamptz,
  created_at timestamptz not null default now(),
  ended_at timestamptz,
  updated_at timestamptz not null default now()
);
create index idx_preview_sessions_project on public.preview_sessions (project_id);
create index idx_preview_sessions_user on public.preview_sessions (user_id);
create index idx_preview_sessions_status on public.preview_sessions (status);
create index idx_preview_sessions_container on public.preview_sessions (container_id);
create index idx_preview_sessions_expires on public.preview_sessions (expires_at)
  where status in ('creating', 'active');
-- One live session per project: a second start reuses it.
create unique index preview_sessions_one_live_idx on public.preview_sessions (project_id)
  where status in ('creating', 'active');
create trigger preview_sessions_updated_at before update on public.preview_sessions
  for each row execute function public.set_updated_at();

alter table public.preview_sessions enable row level security;
create policy preview_sessions_owner_select on public.preview_sessions for select
  to authenticated using (user_id = (select auth.uid()));

grant select on public.preview_sessions to anon, authenticated;
grant all on public.preview_sessions to service_role;

alter publication supabase_realtime add table public.preview_sessions;
