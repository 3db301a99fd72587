"""The status page (``GET /``, SPEC §6.7): read-only, self-contained, signed in once.

- ``gather``  reads the facts: catalog, health report, schedule
- ``view``    decides what they mean (outcomes per day, stale, the banner): pure
- ``render``  Jinja2 templates (autoescaped) and the stylesheet, read at import
- ``session`` session and form tokens (HMAC), the cross-site check
- ``pages``   the routes' requests and responses; api.py registers them
"""
