"""The storefront demo and segment console, served by the service under ``/ui/``.

Plain HTML, CSS and JavaScript in ``static/`` (no build step, nothing from the network):
``index.html`` is the storefront (pick a customer, see their carousels and why, click and
watch them react), ``console.html`` the segment console (segments over versions, models,
live metrics). The pages call the service's own endpoints (``/recommend``, ``/similar``,
``/events``, ``/metrics``) and the read-only JSON under ``/ui/api/`` (:mod:`serving.ui.app`)
for what those do not give: product cards, customer picking, bundle and report data.
"""
