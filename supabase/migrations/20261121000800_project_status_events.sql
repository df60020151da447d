-- Every change of a project's status is appended to its event log (type `project_status`)
-- in the same transaction as the change: exactly once however many agents roll the project
-- up at once, and whichever path changed it (the rollup, or a build that could not start).
-- The event gets a writer of its own with seq 1 (the column defaults), which keeps the
-- readers' per-writer cursor exact.
create or replace function public.log_project_status() returns trigger
language plpgsql as $$
begin
  insert into public.project_logs (project_id, session_id, agent_name, level, type, message, data)
  values (
    new.id,
    (select s.id from public.build_sessions s
      where s.project_id = new.id order by s.created_at desc limit 1),
    'myyc',
    case new.status when 'failed' then 'error' when 'completed' then 'success' else 'info' end,
    'project_status',
    'project ' || new.status,
    jsonb_build_object('status', new.status, 'progress', new.progress, 'from', old.status)
  );
  return null;
end
$$;

create trigger projects_status_event after update of status on public.projects
  for each row when (old.status is distinct from new.status)
  execute function public.log_project_status();
