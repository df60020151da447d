"""The offline provider's app builder: plans and working apps from a library of features.

`make_plan(idea, template)` chooses features from the idea's keywords and the template;
`app_files(plan, idea)` writes a no-build single-page app in which every planned feature is a
section marked `data-feature="<key>"` with the script that makes it work. Modules:

- `ideas`: the idea as data, and the safe names derived from it (noun, slug, plain words);
- `library`: the features (plan text, keywords, requirements, tables, section, script);
- `sections`: each feature's static HTML;
- `planning`: idea → Plan;
- `render`: Plan → files, with the escaping rules for the idea's text;
- `assets/`: the scripts and stylesheet the apps share, as real files.
"""

from local.offline_app.ideas import Idea
from local.offline_app.planning import make_plan
from local.offline_app.render import app_files

__all__ = ["Idea", "app_files", "make_plan"]
