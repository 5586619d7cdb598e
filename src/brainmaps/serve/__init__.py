"""``brainmaps serve``: a web page and JSON API that predict and explain uploaded scans.

Modules: :mod:`~brainmaps.serve.engine` (one scan: validate, register, predict, map),
:mod:`~brainmaps.serve.jobs` (the bounded queue), :mod:`~brainmaps.serve.uploads` and
:mod:`~brainmaps.serve.zipped` (checks of uploaded files), :mod:`~brainmaps.serve.receive`
(streamed request bodies) and :mod:`~brainmaps.serve.app` (the FastAPI application). The
server packages are an extra: ``pip install 'brainmaps[serve]'``.
"""
