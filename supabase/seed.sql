-- Local seed data: the default system prompts the planner starts from.
insert into public.prompts (name, version, role, content, is_active) values
  ('planner', 1, 'system',
   'You are the planner of an AI app builder. From the idea, list the features with a priority '
   '(high, medium, low), the files of a small working web app, and the tables it needs.', true),
  ('codegen', 1, 'system',
   'You write complete, working files for the plan you are given. Answer with files only.', true)
on conflict (name, version) do nothing;
