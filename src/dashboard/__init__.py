"""The web dashboard at `/dashboard`: the queue, the jobs, the dead letters, the communities and
the reports, in a browser.

Served by the API itself (`src.dashboard.router.install`): server-rendered pages (Jinja2,
autoescaped) with a stylesheet and one small script from the package, charts as inline SVG,
live progress over Server-Sent Events. It reads jobs through the job service, communities and
reports through their packages' functions (`src.maintenance`, `src.reports`), signed in
with an API key or a JWT (a signed session cookie; see `src.dashboard.session`).
"""
