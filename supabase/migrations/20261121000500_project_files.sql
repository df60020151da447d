-- project_files: a project's source tree, one row per file. Preview containers sync from it
-- at boot (seed 003 §4.2 step 2) and then follow `file:update` events; `POST
-- /projects/{id}/files` writes a row and logs the event. A table (rather than Supabase
-- Storage) keeps one transactional source of truth that the embedded Postgres has too, lets
-- RLS reuse the projects ownership rule, and lets the API snapshot files and the event-log
-- position consistently.

create table public.project_files (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references public.projects (id) on delete cascade,
  path text not null,
  content text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (project_id, path),
  -- Relative POSIX paths that stay inside the project (the API and the container check too).
  constraint project_files_path_check check (
    length(path) between 1 and 1024
    and path !~ '^/'
    and path !~ '(^|/)\.\.?(/|$)'
    and strpos(path, E'\\') = 0
  ),
  constraint project_files_size_check check (octet_length(content) <= 10485760)
);
create trigger project_files_updated_at before update on public.project_files
  for each row execute function public.set_updated_at();

alter table public.project_files enable row level security;
-- The owner reads their files (a preview container holds an owner-scoped token); only the
-- service role writes. Not added to the supabase_realtime publication: changes are
-- broadcast on the `project:<id>` channel instead, which keeps file bodies out of WAL
-- decoding and lets editors push unsaved content.
create policy project_files_owner_select on public.project_files for select to authenticated
  using (exists (select 1 from public.projects p
                 where p.id = project_files.project_id and p.user_id = (select auth.uid())));

grant select on public.project_files to anon, authenticated;
grant all on public.project_files to service_role;
