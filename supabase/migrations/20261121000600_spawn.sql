-- Spawning a project is one transaction: the project (spawning), its build session (queued)
-- and one pending agent run per pipeline agent. A repeated Idempotency-Key (per owner)
-- returns the first spawn's ids and creates nothing. Called by both store adapters (through
-- PostgREST as /rpc/spawn_project).
create or replace function public.spawn_project(
  p_title text,
  p_description text,
  p_category text,
  p_user_id uuid,
  p_idempotency_key text,
  p_agents text[]
) returns jsonb
language plpgsql as $$
declare
  v_project public.projects;
  v_session_id uuid;
  v_agent text;
begin
  insert into public.projects (title, description, category, user_id, idempotency_key)
  values (p_title, p_description, p_category, p_user_id, p_idempotency_key)
  on conflict (coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
    where idempotency_key is not null
  do nothing
  returning * into v_project;

  if v_project.id is null then
    -- The key was used before: answer with the first spawn.
    select * into v_project from public.projects
     where coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid)
           = coalesce(p_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
       and idempotency_key = p_idempotency_key;
    select id into v_session_id from public.build_sessions
     where project_id = v_project.id order by created_at limit 1;
    return jsonb_build_object('project_id', v_project.id, 'build_id', v_session_id,
                              'created', false);
  end if;

  insert into public.build_sessions (project_id, user_id, vibe_text, template, options)
  values (v_project.id, p_user_id,
          concat_ws(E'\n\n', p_title, p_description), 'webapp',
          jsonb_build_object('category', p_category))
  returning id into v_session_id;

  foreach v_agent in array p_agents loop
    insert into public.agent_runs (agent_name, agent_id, project_id, session_id, user_id)
    values (v_agent, v_agent, v_project.id, v_session_id, p_user_id);
  end loop;

  return jsonb_build_object('project_id', v_project.id, 'build_id', v_session_id,
                            'created', true);
end
$$;
revoke all on function public.spawn_project(text, text, text, uuid, text, text[])
  from public, anon, authenticated;
grant execute on function public.spawn_project(text, text, text, uuid, text, text[])
  to service_role;
