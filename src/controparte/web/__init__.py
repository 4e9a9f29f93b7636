"""The dashboard: server-rendered HTML under `/ui` for operators and the support desk.

A front end beside `http/` (it imports the service layer, the model and the planner,
never `dns/` nor `http/`); `http/app.py` mounts `create_web` under `/ui`. One module
per page or concept:

- `signin.py`: GET, POST /signin; POST /signout (anyone);
- `overview.py`: GET / (signed in);
- `installations.py`: GET /installations (signed in); GET, POST /installations/new
  (an operator);
- `installation.py`: GET /installations/{code} (signed in); POST .../probe (signed
  in), POST .../edit, .../token, .../remove (an operator);
- `app.py`: the app, GET /static/... (anyone), the error pages.

The pair view, `/ui/pair/{caller}/{callee}/{feature}`, is linked from the installation
page for each of its links.

What every page shares: the session and the form token (`session.py`), the templates
and the page state (`pages.py`), the security headers (`headers.py`), the rates of the
overview (`rates.py`). Pages read without JavaScript; `static/app.js` only adds
(copy buttons, a refreshing overview).
"""
