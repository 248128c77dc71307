"""Offline routing work, beside the lab it reads: ``ponder tune`` (policy bands from lab runs), router
evaluation and calibration (``ponder bench routers``), and training the shipped classifier.

Serving keeps only what runs per request (:mod:`ponder.routing`); nothing here is imported by the gateway.
"""
