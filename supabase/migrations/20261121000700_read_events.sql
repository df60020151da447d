-- A project's events after a reader's cursor: for each writer, its events with seq greater
-- than the cursor's (0 for writers the cursor has not seen), ordered by (timestamp,
-- writer_id, seq), at most p_limit. Both store adapters read through it (PostgREST as
-- /rpc/read_events), so they give the same answer by construction.
--
-- A loose index scan visits the project's writers, then each writer's next events by seq on
-- the (project_id, writer_id, seq) index: the cost grows with writers and page size, not with
-- the length of the log. Not SECURITY DEFINER: the caller's row level security applies.
create or replace function public.read_events(
  p_project_id uuid,
  p_cursor jsonb default '{}'::jsonb,
  p_agent text default null,
  p_level text default null,
  p_limit integer default 1000
) returns setof public.project_logs
language sql stable as $$
  with recursive writers(w) as (
    (select writer_id from public.project_logs
      where project_id = p_project_id order by writer_id limit 1)
    union all
    select (select l.writer_id from public.project_logs l
             where l.project_id = p_project_id and l.writer_id > writers.w
             order by l.writer_id limit 1)
    from writers where writers.w is not null
  )
  select e.* from writers cross join lateral (
    select l.* from public.project_logs l
     where l.project_id = p_project_id and l.writer_id = writers.w
       and l.seq > coalesce((p_cursor ->> writers.w::text)::bigint, 0)
       and (p_agent is null or l.agent_name = p_agent)
       and (p_level is null or l.level = p_level)
     order by l.seq
     limit greatest(p_limit, 0)
  ) e
  where writers.w is not null
  order by e."timestamp", e.writer_id, e.seq
  limit greatest(p_limit, 0)
$$;
revoke all on function public.read_events(uuid, jsonb, text, text, integer)
  from public, anon, authenticated;
grant execute on function public.read_events(uuid, jsonb, text, text, integer) to service_role;
