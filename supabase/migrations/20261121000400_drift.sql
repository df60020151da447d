-- The drift sentinel (seed 004): the spec in embedded chunks, and the alerts it raises.

create extension if not exists vector with schema extensions;

create table public.spec_chunks (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.build_sessions (id) on delete cascade,
  chunk_index integer not null check (chunk_index >= 0),
  content text not null,
  embedding extensions.vector(384),
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  unique (session_id, chunk_index)
);
create index spec_chunks_embedding_idx on public.spec_chunks
  using hnsw (embedding extensions.vector_cosine_ops);

create table public.drift_alerts (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.build_sessions (id) on delete cascade,
  ts timestamptz not null default now(),
  severity text not null check (severity in ('info', 'warning', 'critical')),
  type text not null check (type in ('rls_disabled', 'policy_missing', 'table_missing', 'other')),
  resource text not null,
  spec_chunk_id uuid references public.spec_chunks (id) on delete set null,
  recommendation text not null
);
create index drift_alerts_session_idx on public.drift_alerts (session_id, ts desc);

alter table public.spec_chunks enable row level security;
alter table public.drift_alerts enable row level security;

create policy spec_chunks_owner_select on public.spec_chunks for select to authenticated
  using (exists (select 1 from public.build_sessions s
                 where s.id = spec_chunks.session_id and s.user_id = (select auth.uid())));
create policy drift_alerts_owner_select on public.drift_alerts for select to authenticated
  using (exists (select 1 from public.build_sessions s
                 where s.id = drift_alerts.session_id and s.user_id = (select auth.uid())));

grant select on public.spec_chunks, public.drift_alerts to anon, authenticated;
grant all on public.spec_chunks, public.drift_alerts to service_role;

alter publication supabase_realtime add table public.drift_alerts;
